#!/usr/bin/env bash
# kcat from Debian (librdkafka 2.0.2: old API versions, a different tagged-field parser) against a
# fresh sluice with 1 and 2 shards: produce keyed lines, consume them back, list metadata.
# Usage: tests/kcat/run.sh path/to/sluice
set -euo pipefail
sluice=$(realpath "$1")
for cores in 1 2; do
    dir=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$sluice" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --cores "$cores" 2> "$dir/broker.log" &
    pid=$!
    for _ in $(seq 1 500); do
        [ "$(grep -c 'listening on' "$dir/broker.log" || true)" -ge "$cores" ] && break
        sleep 0.02
    done
    fail() { echo "kcat ($cores shards): $*"; echo "broker log:"; cat "$dir/broker.log"; kill -9 "$pid"; exit 1; }
    seq 1 500 | sed 's/^/key-&:value-&/' > "$dir/in"
    timeout 30 kcat -b "127.0.0.1:$port" -t lines -K : -P -l "$dir/in" || fail "produce failed"
    timeout 30 kcat -b "127.0.0.1:$port" -t lines -C -e -q -f '%k:%s\n' > "$dir/out" || fail "consume failed"
    cmp -s "$dir/in" "$dir/out" || fail "consumed records differ from produced ones"
    timeout 30 kcat -b "127.0.0.1:$port" -L | grep -q 'topic "lines" with 1 partitions' || fail "metadata"
    kill -TERM "$pid"
    wait "$pid"
    rm -rf "$dir"
    echo "kcat: 500 keyed records round-trip with $cores shard(s)"
done
