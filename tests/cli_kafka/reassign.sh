#!/usr/bin/env bash
# Apache Kafka's own kafka-reassign-partitions (ReassignPartitionsCommand, 4.4.0 from Maven
# Central) against a cluster of three Sluice brokers: --generate proposes a plan, --execute moves
# partitions of a topic holding records (one to two new brokers, one to another broker),
# --verify reports every move completed and clears the throttles it set, --list finds none under
# way, and kcat reads every record back from the partitions' new leaders.
# Usage: tests/cli_kafka/reassign.sh path/to/sluice
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sluice=$(realpath "$1")
cd "$here/../.."
source scripts/kafka/kafka.sh
source tests/broker.sh
fetch_kafka
start_cluster "$sluice"
trap 'kill -9 "${cluster_pids[@]}" 2>/dev/null || true' EXIT
bootstrap=${cluster_bootstraps[0]}
work=$(mktemp -d)
reassign() {
    timeout -s QUIT -k 10 120 java -cp "$kafka_cp" \
        org.apache.kafka.tools.reassign.ReassignPartitionsCommand --bootstrap-server "$bootstrap" "$@" \
        2> "$work/stderr" || { cat "$work/stderr"; return 1; }
}

"$sluice" topic create moving --partitions 3 --replication-factor 1 --bootstrap "$bootstrap" > /dev/null \
    || cluster_failed "creating the topic failed"
for p in 0 1 2; do
    seq $((p * 100 + 1)) $((p * 100 + 100)) | kcat -P -b "$bootstrap" -t moving -p "$p" \
        || cluster_failed "producing to partition $p failed"
done

printf '{"topics":[{"topic":"moving"}],"version":1}' > "$work/topics.json"
reassign --topics-to-move-json-file "$work/topics.json" --broker-list 1,2,3 --generate > "$work/generated" \
    || cluster_failed "--generate failed"
grep -q "Proposed partition reassignment configuration" "$work/generated" \
    || cluster_failed "--generate proposed nothing: $(cat "$work/generated")"

# Partition 0 to two brokers it is not on, partition 1 to another broker.
leader_of() { "$sluice" topic describe moving --bootstrap "$bootstrap" --json \
    | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['partitions'][$1]['leader'])"; }
p0=$(leader_of 0); p1=$(leader_of 1)
others0=$(python3 -c "print([b for b in (1,2,3) if b != $p0])")
other1=$((p1 % 3 + 1))
cat > "$work/plan.json" <<PLAN
{"version":1,"partitions":[
 {"topic":"moving","partition":0,"replicas":$others0},
 {"topic":"moving","partition":1,"replicas":[$other1]}]}
PLAN
reassign --reassignment-json-file "$work/plan.json" --execute > "$work/executed" \
    || cluster_failed "--execute failed"
grep -q "Successfully started partition reassignments" "$work/executed" \
    || cluster_failed "--execute: $(cat "$work/executed")"

for _ in $(seq 60); do
    reassign --reassignment-json-file "$work/plan.json" --verify > "$work/verified" \
        || cluster_failed "--verify failed"
    [ "$(grep -c "is completed" "$work/verified")" -eq 2 ] && break
    sleep 1
done
[ "$(grep -c "is completed" "$work/verified")" -eq 2 ] \
    || cluster_failed "the moves did not complete: $(cat "$work/verified")"
reassign --list > "$work/listed" || cluster_failed "--list failed"
grep -q "No partition reassignments found" "$work/listed" \
    || cluster_failed "--list: $(cat "$work/listed")"
[ "$(leader_of 1)" -eq "$other1" ] || cluster_failed "partition 1 is not led by broker $other1"

for p in 0 1 2; do
    got=$(kcat -C -b "$bootstrap" -t moving -p "$p" -o beginning -e -q | sort -n | tr '\n' ' ')
    want=$(seq $((p * 100 + 1)) $((p * 100 + 100)) | tr '\n' ' ')
    [ "$got" = "$want" ] || cluster_failed "partition $p after the move holds: $got"
done
trap - EXIT
stop_cluster
rm -rf "$work"
echo "kafka-reassign-partitions: generate, execute, verify and list pass against Sluice"
