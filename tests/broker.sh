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
    "$1" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --cores "$2" "${@:3}" 2> "$dir/broker.log" &
    pid=$!
    for _ in $(seq 1 500); do
        # The log may not exist yet in the first few milliseconds.
        listening=$(grep -c 'listening on' "$dir/broker.log" 2>/dev/null || true)
        [ "${listening:-0}" -ge "$2" ] && return 0
        sleep 0.02
    done
    echo "broker did not start:"; cat "$dir/broker.log"; return 1
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
