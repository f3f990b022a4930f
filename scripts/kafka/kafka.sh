# shellcheck shell=bash
# Sourced by the scripts that run Apache Kafka beside Sluice (scripts/compare-kafka.sh,
# tests/cli_kafka/run.sh). Needs Java 17+ and the jars in scripts/kafka/target/lib
# (`fetch_kafka` brings them from Maven Central).
#
#   fetch_kafka                       jars into scripts/kafka/target/lib (once)
#   start_kafka HEAP [PROPERTY]...    a fresh single-node KRaft broker on loopback; sets
#                                     $kafka_dir, $kafka_port, $kafka_pid; waits until it accepts
#   stop_kafka                        stops it and removes its directory (a no-op when none
#                                     runs, so it may also serve as an EXIT trap)

kafka_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kafka_cp="$kafka_root/target/lib/*"

fetch_kafka() {
    if ! ls "$kafka_root"/target/lib/kafka_2.13-*.jar >/dev/null 2>&1; then
        mvn -q -f "$kafka_root/pom.xml" dependency:copy-dependencies -DoutputDirectory=target/lib
    fi
}

kafka_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A random cluster id as Kafka makes them: URL-safe base64 of a UUID, never starting with '-'
# (the storage tool would read `-t -x...` as an option: 1 run in 64 failed that way).
kafka_cluster_id() {
    python3 -c 'import uuid,base64
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"):
        print(s); break'
}

start_kafka() {
    local heap=$1 cport
    shift
    kafka_dir=$(mktemp -d); kafka_port=$(kafka_free_port); cport=$(kafka_free_port)
    {
        cat <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$kafka_dir/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
PROPS
        printf '%s\n' "$@"
    } > "$kafka_dir/server.properties"
    local cluster_id
    cluster_id=$(kafka_cluster_id)
    java -cp "$kafka_cp" kafka.tools.StorageTool format -t "$cluster_id" \
        -c "$kafka_dir/server.properties" > "$kafka_dir/format.log" 2>&1 \
        || { echo "Apache Kafka's storage format failed:"; cat "$kafka_dir/format.log"; return 1; }
    java "-Xms$heap" "-Xmx$heap" -cp "$kafka_cp" kafka.Kafka "$kafka_dir/server.properties" \
        > "$kafka_dir/kafka.log" 2>&1 &
    kafka_pid=$!
    # Its logging is off (no SLF4J binding): ready is when the listener accepts.
    for _ in $(seq 1 600); do
        (echo > "/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && return 0
        kill -0 "$kafka_pid" 2>/dev/null || { echo "Apache Kafka did not start:"; cat "$kafka_dir/format.log" "$kafka_dir/kafka.log"; return 1; }
        sleep 0.1
    done
    echo "Apache Kafka did not start in 60 s"
    return 1
}

stop_kafka() {
    [ -n "${kafka_pid:-}" ] || return 0
    kill "$kafka_pid" 2>/dev/null || true
    wait "$kafka_pid" 2>/dev/null || true
    rm -rf "$kafka_dir"
    kafka_pid="" kafka_dir=""
}
