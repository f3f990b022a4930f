#!/usr/bin/env bash
# Tests tuning/sluice-tune against a fake /proc, /sys and /etc tree in a temporary directory.
# Every call passes --root and --state-dir, so the real system is never read for settings nor
# changed; no root needed. Prints PASS or FAIL and exits non-zero on failure.
#
#   bash tests/tuning/run.sh
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOL=$HERE/../../tuning/sluice-tune
[ -x "$TOOL" ] || TOOL="bash $TOOL"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-tune-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
FAILURES=0
CHECKS=0

fail() {
    echo "  FAIL: $*"
    FAILURES=$((FAILURES + 1))
}
ok() { CHECKS=$((CHECKS + 1)); }

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
    if [ "$2" = "$3" ]; then ok; else fail "$1: got '$2', want '$3'"; fi
}
# expect_file PATH-IN-TREE CONTENT (exact bytes, with the trailing newline)
expect_file() {
    local got
    got=$(cat "$R$1"; echo x)
    expect_eq "$1" "${got%x}" "$2"$'\n'
}
expect_contains() {
    if grep -qF -- "$3" <<<"$2"; then ok; else fail "$1: output lacks '$3'"; fi
}
# expect_true WHAT TEST-ARGS...: passes when `test ARGS` is true
expect_true() {
    local what=$1
    shift
    if test "$@"; then ok; else fail "$what"; fi
}
expect_lacks() {
    if grep -qF -- "$3" <<<"$2"; then fail "$1: output has '$3'"; else ok; fi
}

# The tree's state: every path with its type and mode, and every file's bytes.
tree_sum() {
    (
        cd "$1" || exit 1
        find . -printf '%p %y %m\n' | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
    ) | sha256sum | cut -d' ' -f1
}

put() { # put PATH CONTENT: a file in the fake tree, content plus a newline, as the kernel shows it
    mkdir -p "$(dirname "$R$1")"
    printf '%s\n' "$2" >"$R$1"
}

# A machine with 4 CPUs, two NICs (eth0 named in /proc/interrupts, eth1 found only through its
# MSI vectors), one NVMe drive and one SATA disk, nothing tuned.
make_tree() {
    R=$1
    mkdir -p "$R"
    local c
    put /sys/devices/system/cpu/online "0-3"
    for c in 0 1 2 3; do
        put /sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor powersave
        put /sys/devices/system/cpu/cpu$c/cpufreq/scaling_available_governors "performance powersave"
    done
    put /sys/kernel/mm/transparent_hugepage/enabled "[always] madvise never"
    put /sys/block/nvme0n1/queue/scheduler "[mq-deadline] kyber none"
    put /sys/block/sda/queue/scheduler "[mq-deadline] none"
    mkdir -p "$R/sys/class/net/lo" "$R/sys/class/net/eth0"
    put /sys/class/net/eth1/device/msi_irqs/50 msix
    mkdir -p "$R/proc"
    cat >"$R/proc/interrupts" <<'EOF'
            CPU0       CPU1       CPU2       CPU3
   0:         42          0          0          0   IO-APIC   2-edge      timer
  26:          0         14          0          0   IO-APIC   4-edge      ttyS0
  30:       1234          0          0          0  IR-PCI-MSI 524288-edge      eth0-TxRx-0
  31:          0       5678          0          0  IR-PCI-MSI 524289-edge      eth0-TxRx-1
  40:         12          0          0          0  IR-PCI-MSI 1048576-edge      nvme0q0
  41:        999          0          0          0  IR-PCI-MSI 1048577-edge      nvme0q1
  50:         77          0          0          0  IR-PCI-MSI 2097152-edge      mlx5_comp0@pci:0000:03:00.0
 NMI:          0          0          0          0   Non-maskable interrupts
EOF
    for c in 0 26 30 31 40 41 50; do
        put /proc/irq/$c/smp_affinity_list "0-3"
    done
    put /proc/777/comm irqbalance
    put /proc/sys/kernel/io_uring_disabled 2
    put /proc/sys/net/core/somaxconn 128
    put /proc/sys/net/core/rmem_max 212992
    put /proc/sys/net/core/wmem_max 212992
    put /proc/sys/net/core/busy_poll 0
    put /proc/sys/net/core/busy_read 0
    put /proc/sys/net/ipv4/tcp_max_syn_backlog 512
    put /proc/sys/net/ipv4/tcp_rmem $'4096\t87380\t33554432'
    put /proc/sys/net/ipv4/tcp_wmem $'4096\t16384\t4194304'
    put /proc/sys/vm/dirty_background_ratio 10
    put /proc/sys/vm/dirty_ratio 20
    put /proc/sys/vm/swappiness 60
    put /proc/sys/vm/max_map_count 65530
    put /proc/sys/fs/aio-max-nr 65536
    put /proc/sys/fs/file-max 9223372036854775807
    mkdir -p "$R/etc/security/limits.d"
}

# Runs the tool on the fake tree; sets OUT and RC.
tune() {
    OUT=$($TOOL "$@" --root "$R" --state-dir "$STATE" 2>&1)
    RC=$?
}

# Each tuner prints exactly one summary line (its name at the start of a line).
one_line_each() {
    local t n
    for t in "$@"; do
        n=$(grep -c "^$t " <<<"$OUT")
        expect_eq "$2 summary lines of $t" "$n" 1
    done
}

TUNERS=(iouring governor irq thp scheduler net busypoll vm fs limits)
START=$SECONDS

echo "== check changes nothing and exits 1"
make_tree "$TMP/root"
STATE=$TMP/state
ORIG=$(tree_sum "$R")
tune check
expect_eq "check exit status" "$RC" 1
expect_eq "tree after check" "$(tree_sum "$R")" "$ORIG"
expect_true "check created the state dir" ! -e "$STATE"
one_line_each "${TUNERS[@]}"
for t in iouring governor thp scheduler net busypoll vm fs limits; do
    expect_contains "check: $t" "$(grep "^$t " <<<"$OUT")" "would change"
done
expect_contains "check without --cores" "$(grep '^irq ' <<<"$OUT")" "cannot be separated"
expect_contains "check governor" "$OUT" "powersave -> performance (cpu0-3)"
expect_contains "check thp" "$OUT" "always -> madvise"
expect_contains "check scheduler" "$OUT" "mq-deadline -> none (nvme0n1)"
expect_contains "check tcp_rmem keeps a larger max" "$OUT" "net.ipv4.tcp_rmem: 4096 87380 33554432 -> 4096 131072 33554432"
expect_contains "check summary" "$OUT" "summary: 10 tuner(s)"

tune check --cores 0-1
expect_eq "check --cores 0-1 exit status" "$RC" 1
expect_eq "tree after check --cores" "$(tree_sum "$R")" "$ORIG"
expect_contains "check irq" "$(grep '^irq ' <<<"$OUT")" "0-3 -> 2-3 (irq30-31,40-41,50)"
expect_contains "irqbalance warning" "$OUT" "irqbalance is running (pid 777)"
expect_lacks "unrelated IRQs" "$OUT" "irq26"

echo "== apply changes the files and saves the old values"
tune apply --cores 0-1
expect_eq "apply exit status" "$RC" 0
[ "$RC" -eq 0 ] || echo "$OUT"
one_line_each "${TUNERS[@]}"
for t in "${TUNERS[@]}"; do
    expect_contains "apply: $t" "$(grep "^$t " <<<"$OUT")" "changed"
done
for c in 0 1 2 3; do
    expect_file /sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor performance
done
for c in 30 31 40 41 50; do
    expect_file /proc/irq/$c/smp_affinity_list "2-3"
done
expect_file /proc/irq/26/smp_affinity_list "0-3"
expect_file /proc/irq/0/smp_affinity_list "0-3"
expect_file /sys/kernel/mm/transparent_hugepage/enabled "always [madvise] never"
expect_file /sys/block/nvme0n1/queue/scheduler "mq-deadline kyber [none]"
expect_file /sys/block/sda/queue/scheduler "[mq-deadline] none"
expect_file /proc/sys/kernel/io_uring_disabled 0
expect_file /proc/sys/net/core/somaxconn 4096
expect_file /proc/sys/net/core/rmem_max 16777216
expect_file /proc/sys/net/core/wmem_max 16777216
expect_file /proc/sys/net/ipv4/tcp_max_syn_backlog 4096
expect_file /proc/sys/net/ipv4/tcp_rmem "4096 131072 33554432"
expect_file /proc/sys/net/ipv4/tcp_wmem "4096 131072 16777216"
expect_file /proc/sys/net/core/busy_poll 50
expect_file /proc/sys/net/core/busy_read 50
expect_file /proc/sys/vm/dirty_background_ratio 5
expect_file /proc/sys/vm/dirty_ratio 20
expect_file /proc/sys/vm/swappiness 1
expect_file /proc/sys/vm/max_map_count 262144
expect_file /proc/sys/fs/aio-max-nr 1048576
expect_file /proc/sys/fs/file-max 9223372036854775807
LIMITS=$(cat "$R/etc/security/limits.d/99-sluice.conf" 2>/dev/null)
expect_contains "limits drop-in" "$LIMITS" "sluice soft nofile 1048576"
expect_contains "limits drop-in" "$LIMITS" "sluice hard memlock unlimited"
# Saved: the original bytes, only of what changed.
expect_eq "saved swappiness" "$(cat "$STATE/vm/files/proc/sys/vm/swappiness")" 60
expect_eq "saved tcp_rmem" "$(cat "$STATE/net/files/proc/sys/net/ipv4/tcp_rmem")" $'4096\t87380\t33554432'
expect_eq "saved irq 30" "$(cat "$STATE/irq/files/proc/irq/30/smp_affinity_list")" "0-3"
expect_eq "saved thp" "$(cat "$STATE/thp/files/sys/kernel/mm/transparent_hugepage/enabled")" "[always] madvise never"
expect_eq "saved scheduler" "$(cat "$STATE/scheduler/files/sys/block/nvme0n1/queue/scheduler")" "[mq-deadline] kyber none"
expect_eq "saved governor" "$(cat "$STATE/governor/files/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor")" powersave
expect_true "apply did not note that the limits drop-in was absent" -e "$STATE/limits/absent/etc/security/limits.d/99-sluice.conf"
expect_true "dirty_ratio was already fine but was saved" ! -e "$STATE/vm/files/proc/sys/vm/dirty_ratio"
expect_true "an unrelated IRQ was saved" ! -e "$STATE/irq/files/proc/irq/26/smp_affinity_list"
APPLIED=$(tree_sum "$R")

echo "== check after apply exits 0"
tune check --cores 0-1
expect_eq "check after apply exit status" "$RC" 0
[ "$RC" -eq 0 ] || echo "$OUT"
for t in "${TUNERS[@]}"; do
    expect_contains "check after apply: $t" "$(grep "^$t " <<<"$OUT")" " ok "
done
expect_eq "tree after the second check" "$(tree_sum "$R")" "$APPLIED"

echo "== apply again keeps the first saved values"
SAVED=$(tree_sum "$STATE")
tune apply --cores 0-1
expect_eq "second apply exit status" "$RC" 0
expect_eq "tree after the second apply" "$(tree_sum "$R")" "$APPLIED"
expect_eq "state after the second apply" "$(tree_sum "$STATE")" "$SAVED"

echo "== revert restores every original byte"
OUT=$($TOOL revert --root "$TMP/does-not-exist" --state-dir "$STATE" 2>&1)
expect_eq "revert with a missing --root exit status" "$?" 2
mkdir -p "$TMP/other"
OUT=$($TOOL revert --root "$TMP/other" --state-dir "$STATE" 2>&1)
expect_eq "revert from another root exit status" "$?" 2
expect_contains "revert from another root" "$OUT" "were saved from root"
tune revert
expect_eq "revert exit status" "$RC" 0
[ "$RC" -eq 0 ] || echo "$OUT"
one_line_each "${TUNERS[@]}"
for t in "${TUNERS[@]}"; do
    expect_contains "revert: $t" "$(grep "^$t " <<<"$OUT")" "reverted"
done
expect_eq "tree after revert" "$(tree_sum "$R")" "$ORIG"
expect_eq "files left in the state dir" "$(find "$STATE" -type f | wc -l)" 0
tune revert
expect_eq "second revert exit status" "$RC" 0
expect_contains "second revert" "$(grep '^vm ' <<<"$OUT")" "skipped"
expect_eq "tree after the second revert" "$(tree_sum "$R")" "$ORIG"

echo "== --tuner limits the work to one tuner"
tune apply --tuner vm
expect_eq "apply --tuner vm exit status" "$RC" 0
expect_eq "summary lines of apply --tuner vm" "$(grep -cE "^($(IFS='|'; echo "${TUNERS[*]}")) " <<<"$OUT")" 1
expect_file /proc/sys/vm/swappiness 1
expect_file /proc/sys/net/core/somaxconn 128
expect_file /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor powersave
expect_file /sys/kernel/mm/transparent_hugepage/enabled "[always] madvise never"
expect_eq "state dirs after apply --tuner vm" "$(cd "$STATE" && find . -mindepth 1 -maxdepth 1 -type d | sort | tr '\n' ' ')" "./vm "
tune check --tuner vm --tuner thp
expect_eq "check --tuner vm --tuner thp exit status" "$RC" 1
one_line_each vm thp
expect_lacks "check --tuner vm --tuner thp" "$OUT" "governor "
tune revert --tuner vm
expect_eq "revert --tuner vm exit status" "$RC" 0
expect_eq "tree after revert --tuner vm" "$(tree_sum "$R")" "$ORIG"

echo "== bad arguments exit 2 and change nothing"
for args in "--cores 0-5" "--cores x" "--tuner nope" "frobnicate" "--state-dir"; do
    # shellcheck disable=SC2086 # the argument strings are split on purpose
    OUT=$($TOOL apply $args --root "$R" 2>&1)
    expect_eq "exit status of apply $args" "$?" 2
done
expect_eq "tree after bad arguments" "$(tree_sum "$R")" "$ORIG"

echo "== a kernel without some files: skipped, not failed; an unwritable file: failed, exit 2"
make_tree "$TMP/bare"
rm -rf "$R/sys/devices/system/cpu"/cpu*/cpufreq "$R/sys/block/nvme0n1" "$R/proc/sys/net/core/busy_poll" \
    "$R/proc/sys/net/core/busy_read" "$R/sys/kernel/mm/transparent_hugepage" "$R/proc/sys/kernel"
# A path that cannot be read or written, even by root.
rm "$R/proc/sys/vm/max_map_count" && mkdir "$R/proc/sys/vm/max_map_count"
BARE=$(tree_sum "$R")
STATE=$TMP/state-bare
tune apply --cores 0
expect_eq "apply on a bare tree exit status" "$RC" 2
for t in iouring governor thp scheduler busypoll; do
    expect_contains "bare: $t" "$(grep "^$t " <<<"$OUT")" "skipped"
done
expect_contains "bare: vm" "$(grep "^vm " <<<"$OUT")" "failed"
expect_contains "bare: vm detail" "$OUT" "vm.max_map_count: not changed"
expect_contains "bare: net" "$(grep "^net " <<<"$OUT")" "changed"
expect_file /proc/sys/vm/swappiness 1
expect_file /proc/irq/30/smp_affinity_list "1-3"
expect_contains "bare: summary" "$OUT" "1 failed"
tune revert
expect_eq "revert on a bare tree exit status" "$RC" 0
expect_eq "bare tree after revert" "$(tree_sum "$R")" "$BARE"

ELAPSED=$((SECONDS - START))
if [ "$FAILURES" -eq 0 ]; then
    echo "PASS: tests/tuning ($CHECKS checks, ${ELAPSED}s)"
    exit 0
fi
echo "FAIL: tests/tuning ($FAILURES of $((CHECKS + FAILURES)) checks failed)"
exit 1
