#!/usr/bin/env bash
# kcat from Debian (librdkafka 2.0.2: old API versions, a different tagged-field parser) against a
# fresh sluice with 1 and 2 shards: produce keyed lines, consume them back, list metadata, consume
# in a group and resume from its committed offset.
# Usage: tests/kcat/run.sh path/to/sluice
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sluice=$(realpath "$1")
source "$here/../broker.sh"
for cores in 1 2; do
    start_broker "$sluice" "$cores"
    seq 1 500 | sed 's/^/key-&:value-&/' > "$dir/in"
    timeout 30 kcat -b "127.0.0.1:$port" -t lines -K : -P -l "$dir/in" || broker_failed "kcat produce failed"
    timeout 30 kcat -b "127.0.0.1:$port" -t lines -C -e -q -f '%k:%s\n' > "$dir/out" || broker_failed "kcat consume failed"
    cmp -s "$dir/in" "$dir/out" || broker_failed "kcat: consumed records differ from produced ones"
    timeout 30 kcat -b "127.0.0.1:$port" -L | grep -q 'topic "lines" with 1 partitions' || broker_failed "kcat metadata"
    # A balanced consumer group: the first run reads everything and commits; a second member of
    # the same group resumes after the committed offset and finds only the newer lines.
    timeout 60 kcat -b "127.0.0.1:$port" -G kgroup -X auto.offset.reset=earliest -e -q -f '%k:%s\n' lines > "$dir/group1" || broker_failed "kcat group consume failed"
    cmp -s "$dir/in" "$dir/group1" || broker_failed "kcat group: consumed records differ"
    seq 501 510 | sed 's/^/key-&:value-&/' > "$dir/more"
    timeout 30 kcat -b "127.0.0.1:$port" -t lines -K : -P -l "$dir/more" || broker_failed "kcat produce failed"
    timeout 60 kcat -b "127.0.0.1:$port" -G kgroup -X auto.offset.reset=earliest -e -q -f '%k:%s\n' lines > "$dir/group2" || broker_failed "kcat group resume failed"
    cmp -s "$dir/more" "$dir/group2" || broker_failed "kcat group: did not resume from the committed offset"
    stop_broker
    echo "kcat: 500 keyed records round-trip, group resumes from its commit, with $cores shard(s)"
done
