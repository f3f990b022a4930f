# Sourced by the shell-driven client tests (tests/java/run.sh, tests/kcat/run.sh).
# start_broker SLUICE CORES [ARG...]: starts a fresh broker (extra arguments go to `sluice serve`) and
# waits until every shard listens; sets $dir (data and log), $port and $pid. stop_broker: SIGTERM, wait, clean up.
# pause_broker: a clean stop that keeps $dir; resume_broker SLUICE CORES [ARG...]: the broker again,
# on the same data dir and port (its log starts anew).

start_broker() {
    dir=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    resume_broker "$@"
}

pause_broker() {
    kill -TERM "$pid"
    wait "$pid"
}

resume_broker() {
    # Its stdout goes nowhere: a broker left running must never hold a caller's pipe open.
    "$1" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --cores "$2" "${@:3}" \
        > /dev/null 2> "$dir/broker.log" &
    pid=$!
    for _ in $(seq 1 500); do
        # The log may not exist yet in the first few milliseconds.
        listening=$(grep -c 'listening on' "$dir/broker.log" 2>/dev/null || true)
        [ "${listening:-0}" -ge "$2" ] && return 0
        sleep 0.02
    done
    echo "broker did not start:"; cat "$dir/broker.log"; kill -9 "$pid"; return 1
}

stop_broker() {
    kill -TERM "$pid"
    wait "$pid"
    rm -rf "$dir"
}

# broker_failed MESSAGE: prints the message and the broker log, kills the broker, exits 1.
broker_failed() {
    echo "$*"; echo "broker log:"; cat "$dir/broker.log"; kill -9 "$pid"; exit 1
}

# start_cluster SLUICE: three fresh brokers, one shard each, every one a voter of the metadata
# quorum; waits until each of them answers Metadata with all three (kcat), so that no client
# meets a broker that has not yet learnt of the others' unfencing. Sets $cluster_dir,
# $cluster_pids and $cluster_bootstraps (host:port of brokers 1, 2, 3). On failure it prints the
# logs, kills the brokers and returns 1. stop_cluster: SIGTERM each, wait, clean up.
start_cluster() {
    command -v kcat > /dev/null || { echo "start_cluster needs kcat (apt-get install kcat)"; return 1; }
    cluster_dir=$(mktemp -d)
    local ports voters="" i bootstrap
    ports=$(python3 -c 'import socket
ss=[socket.socket() for _ in range(6)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
    read -r -a ports <<< "$ports"
    for i in 1 2 3; do
        voters+="${voters:+,}$i@127.0.0.1:${ports[$((2 * i - 1))]}"
    done
    cluster_pids=()
    cluster_bootstraps=()
    for i in 1 2 3; do
        local client=${ports[$((2 * i - 2))]} controller=${ports[$((2 * i - 1))]}
        "$1" serve --data-dir "$cluster_dir/data-$i" --cores 1 \
            --set node.id=$i \
            --set "listeners=PLAINTEXT://127.0.0.1:$client,CONTROLLER://127.0.0.1:$controller" \
            --set controller.listener.names=CONTROLLER \
            --set "controller.quorum.voters=$voters" \
            --set cpuset=unpinned \
            --set sluice.admin.listen=none \
            --set group.initial.rebalance.delay.ms=0 \
            > /dev/null 2> "$cluster_dir/broker-$i.log" &
        cluster_pids+=($!)
        cluster_bootstraps+=("127.0.0.1:$client")
    done
    for bootstrap in "${cluster_bootstraps[@]}"; do
        cluster_knows_three "$bootstrap" || {
            echo "the cluster did not form ($bootstrap does not list three brokers):"
            tail -n 30 "$cluster_dir"/broker-*.log
            kill -9 "${cluster_pids[@]}" 2>/dev/null
            return 1
        }
    done
}

# cluster_knows_three HOST:PORT: true once that broker's Metadata lists three brokers (60 s at most).
cluster_knows_three() {
    local _
    for _ in $(seq 1 300); do
        timeout 10 kcat -L -b "$1" -m 5 2>/dev/null | grep -q '^ *3 brokers:' && return 0
        sleep 0.2
    done
    return 1
}

stop_cluster() {
    local pid
    for pid in "${cluster_pids[@]}"; do
        kill -TERM "$pid"
    done
    for pid in "${cluster_pids[@]}"; do
        wait "$pid"
    done
    rm -rf "$cluster_dir"
}

# cluster_failed MESSAGE: prints the message and every broker's log tail, kills them, exits 1.
cluster_failed() {
    echo "$*"
    tail -n 60 "$cluster_dir"/broker-*.log
    kill -9 "${cluster_pids[@]}" 2>/dev/null
    exit 1
}
