#!/usr/bin/env bash
# Builds the Java client test with Maven and runs it against a fresh sluice with 1 and 2 shards,
# then the Java consumer across a batch damaged while the broker was stopped (DamagedBatchTest),
# then admin, produce, consume and a group of two against a cluster of three (ClusterTest).
# Usage: tests/java/run.sh path/to/sluice
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sluice=$(realpath "$1")
source "$here/../broker.sh"
mvn -q -f "$here/pom.xml" -DskipTests package dependency:copy-dependencies -DoutputDirectory="$here/target/dependency"
cp="$here/target/classes:$here/target/dependency/*"
# java ARGS...: the JVM under a time limit; at the limit SIGQUIT makes it print its threads'
# stacks (where it hangs), and 10 s later it is killed: a hang fails here, in minutes.
java_bin=$(command -v java)
java() { timeout -s QUIT -k 10 240 "$java_bin" "$@"; }
for cores in 1 2; do
    start_broker "$sluice" "$cores"
    java -cp "$cp" sluice.JavaClientTest "127.0.0.1:$port" || broker_failed "java client test failed ($cores shards)"
    stop_broker
done

# One shard is enough: what a damaged batch does is the partition's affair.
start_broker "$sluice" 1
java -cp "$cp" sluice.DamagedBatchTest produce "127.0.0.1:$port" || broker_failed "damaged batch test: produce failed"
pause_broker
range=$(java -cp "$cp" sluice.DamagedBatchTest damage "$dir/data") || broker_failed "damaged batch test: damage failed"
resume_broker "$sluice" 1
java -cp "$cp" sluice.DamagedBatchTest consume "127.0.0.1:$port" $range || broker_failed "damaged batch test failed"
grep -q "fail their check" "$dir/broker.log" || broker_failed "damaged batch test: the broker did not log the damage"
stop_broker

# A cluster of three brokers, every one a voter of the metadata quorum.
start_cluster "$sluice"
java -cp "$cp" sluice.ClusterTest "${cluster_bootstraps[@]}" || cluster_failed "java cluster test failed"
stop_cluster
