#!/usr/bin/env bash
# The admin CLI against Apache Kafka 4.1 (single node, KRaft, loopback): the same commands and
# checks as against Sluice (tests/cli_tools.rs), proving the CLI needs nothing Sluice-specific.
# Apache Kafka comes from Maven Central into scripts/kafka/target/lib (as for the benchmarks).
# Usage: tests/cli_kafka/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
mvn -q -f scripts/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=target/lib
cp="scripts/kafka/target/lib/*"
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); cport=$(free_port)
cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
cluster_id=$(python3 -c 'import uuid,base64;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
java -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" > "$dir/format.log" 2>&1
java -Xms512m -Xmx512m -cp "$cp" kafka.Kafka "$dir/server.properties" > "$dir/kafka.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
# Its logging is off (no SLF4J binding): ready is when the listener accepts.
for _ in $(seq 1 600); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { echo "Apache Kafka did not start:"; cat "$dir/kafka.log"; exit 1; }
    sleep 0.1
done
(echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "Apache Kafka did not start in 60 s"; exit 1; }
SLUICE_TEST_KAFKA_BOOTSTRAP="127.0.0.1:$port" cargo test -q --locked --test cli_tools -- --ignored \
    || { echo "the admin CLI failed against Apache Kafka"; exit 1; }
echo "admin CLI: every command passes against Apache Kafka 4.1.1"
