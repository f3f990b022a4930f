#!/usr/bin/env bash
# Kernel settings for running Sluice on Linux bare metal. Prints what it would change; pass
# --apply (as root) to apply them for the running kernel. Nothing is made persistent: copy the
# printed sysctl lines into /etc/sysctl.d/ once you are happy with them.
#
# Why each one:
# - memlock: glommio registers io_uring buffers and refuses to start below 512 KiB of locked
#   memory; a broker with many shards wants far more.
# - somaxconn / tcp_max_syn_backlog: many clients connecting at once (every shard listens).
# - rmem/wmem: large fetch responses and produce requests on fast links.
# - vm.dirty_*: Sluice fsyncs what it acknowledges (group fsync); keeping the dirty page
#   backlog small makes each fdatasync shorter and latency steadier.
# - vm.swappiness: the page cache holds the hot segments; do not trade it for swap.
# - fs.aio-max-nr / fs.file-max: one file per segment and index across many partitions.
set -euo pipefail

apply=false
[ "${1:-}" = "--apply" ] && apply=true

settings=(
    "net.core.somaxconn=4096"
    "net.ipv4.tcp_max_syn_backlog=4096"
    "net.core.rmem_max=16777216"
    "net.core.wmem_max=16777216"
    "net.ipv4.tcp_rmem=4096 131072 16777216"
    "net.ipv4.tcp_wmem=4096 131072 16777216"
    "vm.dirty_background_ratio=5"
    "vm.dirty_ratio=20"
    "vm.swappiness=1"
    "fs.file-max=2097152"
    "fs.aio-max-nr=1048576"
)

echo "# current -> proposed"
for s in "${settings[@]}"; do
    key=${s%%=*}
    want=${s#*=}
    have=$(sysctl -n "$key" 2>/dev/null | tr -s '\t ' ' ' || echo "?")
    printf '%-32s %-24s -> %s\n' "$key" "$have" "$want"
    if $apply; then
        sysctl -q -w "$key=$want"
    fi
done

echo
echo "# io_uring: /proc/sys/kernel/io_uring_disabled = $(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 'absent (old kernel?)') (must be 0)"
echo "# locked memory for this shell: $(ulimit -l) KiB (glommio needs >= 512; run the broker with e.g. 'ulimit -l unlimited' or LimitMEMLOCK=infinity in systemd)"
echo "# CPU governor: $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo 'n/a') (performance is best for latency)"
if $apply; then
    for g in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do
        [ -w "$g" ] && echo performance > "$g"
    done
    echo "applied"
else
    echo "dry run: pass --apply as root to apply"
fi
