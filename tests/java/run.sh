#!/usr/bin/env bash
# Builds the Java client test with Maven and runs it against a fresh sluice with 1 and 2 shards.
# Usage: tests/java/run.sh path/to/sluice
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sluice=$(realpath "$1")
mvn -q -f "$here/pom.xml" -DskipTests package dependency:copy-dependencies -DoutputDirectory="$here/target/dependency"
cp="$here/target/classes:$here/target/dependency/*"
for cores in 1 2; do
    dir=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$sluice" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --cores "$cores" 2> "$dir/broker.log" &
    pid=$!
    for _ in $(seq 1 500); do
        [ "$(grep -c 'listening on' "$dir/broker.log" || true)" -ge "$cores" ] && break
        sleep 0.02
    done
    if ! java -cp "$cp" sluice.JavaClientTest "127.0.0.1:$port"; then
        kill -9 "$pid"; echo "broker log:"; cat "$dir/broker.log"; exit 1
    fi
    kill -TERM "$pid"
    wait "$pid"
    rm -rf "$dir"
done
