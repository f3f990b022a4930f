# shellcheck shell=bash
# Sourced by the scripts that run Apache Kafka beside Sluice (scripts/compare-kafka.sh,
# scripts/compare-kafka-cluster.sh, tests/cli_kafka/run.sh). Needs Java 17+ and the jars in scripts/kafka/target/lib
# (`fetch_kafka` brings them from Maven Central).
#
#   fetch_kafka                       jars into scripts/kafka/target/lib (once)
#   start_kafka HEAP [PROPERTY]...    a fresh single-node KRaft broker on loopback; sets
#                                     $kafka_dir, $kafka_port, $kafka_pid; waits until it accepts
#   stop_kafka                        stops it and removes its directory (a no-op when none
#                                     runs, so it may also serve as an EXIT trap)
#   start_kafka_cluster HEAP [PROPERTY]...
#                                     a fresh three-node KRaft cluster on loopback, every node a
#                                     broker and a controller voter (combined mode); sets
#                                     $kafka_cluster_dir, $kafka_bootstrap (all three),
#                                     kafka_ports[1..3] and kafka_pids[1..3], and writes each
#                                     node's process id to $kafka_cluster_dir/node-N.pid; waits
#                                     until every node accepts
#   start_kafka_node N                starts node N of that cluster again (after a kill), on its
#                                     data and ports; waits until it accepts
#   wait_listening PORT PID SECS WHAT LOG...
#                                     waits until 127.0.0.1:PORT accepts; fails, showing the
#                                     logs, if PID exits or SECS pass first
#   stop_kafka_cluster                stops the three (SIGTERM, SIGKILL after 10 s) and removes
#                                     the directory; a no-op when none runs
#   stop_processes PID...             SIGTERM, SIGKILL after 10 s, reaped

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

# The three-node cluster. Node N's files are in $kafka_cluster_dir/node-N: server.properties,
# data/, kafka.log (its console: errors only, no log4j2 configuration is given).
kafka_cluster_dir="" kafka_cluster_heap=""
kafka_pids=() kafka_ports=()

start_kafka_cluster() {
    kafka_cluster_heap=$1
    shift
    local i voters="" cports=() cluster_id
    kafka_cluster_dir=$(mktemp -d)
    kafka_bootstrap=""
    for i in 1 2 3; do
        kafka_ports[i]=$(kafka_free_port); cports[i]=$(kafka_free_port)
        voters+="${voters:+,}$i@127.0.0.1:${cports[i]}"
        kafka_bootstrap+="${kafka_bootstrap:+,}127.0.0.1:${kafka_ports[i]}"
    done
    cluster_id=$(kafka_cluster_id)
    for i in 1 2 3; do
        mkdir -p "$kafka_cluster_dir/node-$i"
        {
            cat <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:${kafka_ports[i]},CONTROLLER://127.0.0.1:${cports[i]}
advertised.listeners=PLAINTEXT://127.0.0.1:${kafka_ports[i]}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$kafka_cluster_dir/node-$i/data
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
PROPS
            printf '%s\n' "$@"
        } > "$kafka_cluster_dir/node-$i/server.properties"
        java -cp "$kafka_cp" kafka.tools.StorageTool format -t "$cluster_id" \
            -c "$kafka_cluster_dir/node-$i/server.properties" > "$kafka_cluster_dir/node-$i/format.log" 2>&1 \
            || { echo "Apache Kafka's storage format failed:"; cat "$kafka_cluster_dir/node-$i/format.log"; return 1; } >&2
    done
    for i in 1 2 3; do start_kafka_node "$i" nowait; done
    for i in 1 2 3; do kafka_wait_node "$i" || return 1; done
}

# Starts node $1 (its data dir kept); waits until it accepts unless $2 is "nowait".
start_kafka_node() {
    local i=$1 node="$kafka_cluster_dir/node-$1"
    java "-Xms$kafka_cluster_heap" "-Xmx$kafka_cluster_heap" -cp "$kafka_cp" kafka.Kafka \
        "$node/server.properties" >> "$node/kafka.log" 2>&1 &
    kafka_pids[i]=$!
    echo "${kafka_pids[i]}" > "$kafka_cluster_dir/node-$i.pid"
    [ "${2:-}" = nowait ] || kafka_wait_node "$i"
}

kafka_wait_node() {
    wait_listening "${kafka_ports[$1]}" "${kafka_pids[$1]}" 90 "Apache Kafka node $1" \
        "$kafka_cluster_dir/node-$1/"{format,kafka}.log
}

# wait_listening PORT PID SECONDS WHAT LOG...: waits until something accepts on 127.0.0.1:PORT;
# if process PID exits first, or SECONDS pass, prints why (and the LOG files) and returns 1.
wait_listening() {
    local port=$1 pid=$2 seconds=$3 what=$4
    shift 4
    for _ in $(seq 1 $((seconds * 10))); do
        (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "$what did not start:"; cat "$@"; return 1; } >&2
        sleep 0.1
    done
    echo "$what did not start in $seconds s" >&2
    return 1
}

# Stops the processes $@ (this shell's children): SIGTERM, then SIGKILL to any still running 10 s
# later, and reaps them. Empty arguments are skipped.
stop_processes() {
    local pid alive
    for pid in "$@"; do
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
    for _ in $(seq 1 100); do
        alive=0
        for pid in "$@"; do
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "$@"; do
        if [ -n "$pid" ]; then
            kill -9 "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}

stop_kafka_cluster() {
    [ -n "$kafka_cluster_dir" ] || return 0
    # Each node's controlled shutdown asks the quorum, which the others are leaving too: they
    # get 10 s, then what is left is killed (the data is thrown away anyway).
    stop_processes "${kafka_pids[1]:-}" "${kafka_pids[2]:-}" "${kafka_pids[3]:-}"
    rm -rf "$kafka_cluster_dir"
    kafka_cluster_dir="" kafka_pids=() kafka_ports=()
}
