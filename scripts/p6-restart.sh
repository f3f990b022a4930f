#!/usr/bin/env bash
# P6: restart after kill -9 with many partitions of many segments, and how soon the broker
# serves again (a Metadata answer, then a fetch from the oldest segment of two partitions).
#
#   scripts/p6-restart.sh [PARTITIONS] [SEGMENTS_PER_PARTITION]     (default 10000 10)
#
# The fill runs on tmpfs (/dev/shm), where fsync costs nothing: on disk every roll of every
# partition is several fsyncs and 100,000 of them take most of an hour on this VM. After the
# kill -9 the data directory, exactly as the killed broker left it, is copied to disk and the
# restart runs from there. Set COLD=1 to drop the page cache before the restart (needs root).
#
# After the crash restart it stops the broker cleanly and restarts it, timing both.
#
# Environment: SLUICE (binary; default $CARGO_TARGET_DIR or target, /release/sluice), CORES
# (shards, default 2), PORT (default 19192), DATA (disk directory; default a new one in /tmp),
# KEEP=1 keeps the data afterwards, RESTART_ONLY=1 skips the fill and restarts from DATA as a
# KEEP=1 run left it (killed with -9 at the end, so still a crash to recover from).
set -euo pipefail

partitions=${1:-10000}
segments=${2:-10}
sluice=${SLUICE:-${CARGO_TARGET_DIR:-target}/release/sluice}
cores=${CORES:-2}
port=${PORT:-19192}
admin_port=$((port + 1))
fill_dir=/dev/shm/sluice-p6-$$
data=${DATA:-/tmp/sluice-p6-$$}
bootstrap=127.0.0.1:$port
pid=

cleanup() {
    if [[ -n $pid ]]; then
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$fill_dir" "$fill_dir.log"
    if [[ ${KEEP:-0} != 1 ]]; then
        rm -rf "$data" "$data.restart.log"
    fi
}
trap cleanup EXIT

start() { # DATA_DIR LOG_FILE
    "$sluice" serve --listen "$bootstrap" --data-dir "$1" --cores "$cores" \
        --set "sluice.admin.listen=127.0.0.1:$admin_port" >"$2" 2>&1 &
    pid=$!
}

serving() {
    "$sluice" topic list --bootstrap "$bootstrap" >/dev/null 2>&1
}

now() { date +%s.%N; }

# Reads one record at offset 0 of a partition: its oldest, sealed segment.
fetch_oldest() { # PARTITION
    local record
    record=$("$sluice" consume p6 --bootstrap "$bootstrap" --partition "$1" --offset 0 \
        --max-messages 1 --timeout-ms 10000 2>/dev/null | tr -d '\0')
    [[ -n $record ]]
}

kill_hard() {
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
}

fill() {
    echo "fill: $partitions partitions x $segments segments on tmpfs ($fill_dir)"
    start "$fill_dir" "$fill_dir.log"
    until serving; do sleep 0.1; done
    # Every batch is bigger than segment.bytes, so each one rolls a new segment. With no key the
    # records go to the partitions in turn: a round of one record per partition is one batch, so
    # one segment, per partition.
    "$sluice" topic create p6 --bootstrap "$bootstrap" --partitions "$partitions" \
        --config segment.bytes=100 >/dev/null
    fill_start=$(now)
    for _ in $(seq "$segments"); do
        "$sluice" bench produce --bootstrap "$bootstrap" --topic p6 --partitions "$partitions" \
            --records "$partitions" --size 100 --json >/dev/null
    done
    echo "fill took $(echo "$(now) - $fill_start" | bc) s"
    kill_hard
    echo "segments: $(find "$fill_dir" -name '*.log' | wc -l); copying to disk ($data)"
    rm -rf "$data"
    cp -a "$fill_dir" "$data"
    rm -rf "$fill_dir" "$fill_dir.log"
    sync
}

# Starts the broker on DATA and waits for Metadata; sets t_all once every shard serves.
restart() { # LOG_FILE
    start "$data" "$1"
    until serving; do
        kill -0 "$pid" 2>/dev/null || { cat "$1"; exit 1; }
        sleep 0.02
    done
    t_metadata=$(now)
    # The first shard to finish answers Metadata; the others may still be opening theirs.
    until [[ $(grep -c "serving .* partitions" "$1") -ge $cores ]]; do sleep 0.02; done
    t_all=$(now)
}

# RESTART_ONLY=1 restarts from what an earlier run left in DATA (with KEEP=1).
if [[ ${RESTART_ONLY:-0} != 1 ]]; then
    fill
fi
if [[ ${COLD:-0} == 1 ]]; then
    echo 3 >/proc/sys/vm/drop_caches
fi

segment_count=$(find "$data" -name '*.log' | wc -l)
echo "restart after kill -9 ($(ulimit -Hn) open files at most)"
restart_log=$data.restart.log
t0=$(now)
restart "$restart_log"
for p in 0 1 $((partitions / 2)) $((partitions - 1)); do
    fetch_oldest "$p"
done
t_fetch=$(now)

fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
sealed_open=$(curl -s "http://127.0.0.1:$admin_port/metrics" |
    awk '/^sluice_sealed_segment_files_open/ {sum += $2} END {print sum + 0}')
echo "segments:                      $segment_count"
echo "metadata answered after:       $(echo "$t_metadata - $t0" | bc) s"
echo "every shard serving after:     $(echo "$t_all - $t0" | bc) s"
echo "oldest segments fetched after: $(echo "$t_fetch - $t0" | bc) s (partitions 0, 1, $((partitions / 2)), $((partitions - 1)))"
echo "open files after restart:      $fds (sealed segment files in the caches: $sealed_open)"
echo "RSS:                           $((rss_kb / 1024)) MB"
grep -h "opened .* partitions in" "$restart_log" | sed 's/^/broker: /' || true

# A clean stop (SIGTERM: index files, producer snapshots, one syncfs, the marker), then a clean
# start, which trusts every segment.
t_stop=$(now)
kill -TERM "$pid"
wait "$pid" || true
pid=
echo "clean stop took:               $(echo "$(now) - $t_stop" | bc) s"
t0=$(now)
restart "$data.clean-restart.log"
echo "clean restart, metadata after: $(echo "$t_metadata - $t0" | bc) s (every shard: $(echo "$t_all - $t0" | bc) s)"
if [[ ${KEEP:-0} == 1 ]]; then
    # Leave DATA as a crash left it, for the next RESTART_ONLY=1 run.
    kill_hard
fi
rm -f "$data.clean-restart.log"
