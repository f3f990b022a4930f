#!/usr/bin/env bash
# The Debian package end to end, on this machine (as root): builds it from the given binary with
# scripts/package-deb, installs it with dpkg -i and checks its files, the `sluice` user and
# /var/lib/sluice; starts the broker as the unit does (systemctl start where systemd is PID 1,
# otherwise /usr/bin/sluice serve --config /etc/sluice/sluice.properties as user sluice with the
# unit's limits), on a free port written into the installed config; produces and consumes a
# record (kcat, or the installed sluice's produce/consume); stops it with SIGTERM and checks the
# clean stop; purges the package (the broker's data and the user stay, as postrm promises).
# Then a second round without a broker: a reinstall keeps an edited conffile, remove keeps it,
# purge removes it, /var/lib/sluice (empty) and the user.
#
# Refuses to run where the package, the user sluice, /etc/sluice or /var/lib/sluice already
# exist: it would purge someone's broker. Cleans up (purge, user, data) in a trap, also on
# failure, and prints the broker's log tail when something fails.
#
# Usage: tests/package/run.sh path/to/sluice     (e.g. target/debug/sluice)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
[ $# -eq 1 ] || { usage >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary=$(realpath -e -- "$1")
started=$SECONDS

say() { printf '  %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "tests/package/run.sh: needs root (dpkg -i)"; exit 1; }
for tool in dpkg dpkg-deb python3 setpriv timeout; do
    command -v "$tool" >/dev/null || { echo "tests/package/run.sh: $tool not found"; exit 1; }
done
if dpkg-query -W -f '${db:Status-Status}' sluice 2>/dev/null | grep -qv '^not-installed$' ||
    getent passwd sluice >/dev/null || getent group sluice >/dev/null ||
    [ -e /etc/sluice ] || [ -e /var/lib/sluice ]; then
    echo "tests/package/run.sh: a sluice package, user/group sluice, /etc/sluice or /var/lib/sluice"
    echo "  exists already; not touching it. If it is left over from this test:"
    echo "  dpkg --purge sluice; rm -rf /etc/sluice /var/lib/sluice; userdel sluice; groupdel sluice"
    exit 1
fi

# systemd as PID 1 (not just installed): then the unit itself runs the broker.
with_systemd=false
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then with_systemd=true; fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-package-test.XXXXXX")
pid=""
installed=false

broker_log() {
    if $with_systemd; then
        journalctl -u sluice --no-pager -n "${1:-40}" 2>/dev/null || true
    else
        tail -n "${1:-40}" "$tmp/broker.log" 2>/dev/null || true
    fi
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; wait "$pid" 2>/dev/null; fi
    if $installed; then
        if $with_systemd; then timeout 60 systemctl kill --signal=KILL sluice >/dev/null 2>&1; fi
        timeout 120 dpkg --purge sluice >/dev/null 2>&1 </dev/null
    fi
    # Everything below was checked absent at the start, so this test made it.
    rm -rf /var/lib/sluice /etc/sluice
    getent passwd sluice >/dev/null && userdel sluice
    getent group sluice >/dev/null && groupdel sluice
    $with_systemd && systemctl daemon-reload >/dev/null 2>&1
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "FAIL: $*"
    echo "--- broker log (tail)"
    broker_log 40
    if [ -s "$tmp/dpkg.log" ]; then echo "--- dpkg output (tail)"; tail -n 20 "$tmp/dpkg.log"; fi
    exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
accepts() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
status_of() { dpkg-query -W -f '${db:Status-Status}' sluice 2>/dev/null || echo not-installed; }
dpkg_run() { timeout 120 dpkg "$@" </dev/null >"$tmp/dpkg.log" 2>&1 || fail "dpkg $* failed"; }

# --- build -------------------------------------------------------------------------------------

echo "package: building the .deb from $binary"
timeout 300 "$repo/scripts/package-deb" --binary "$binary" --out "$tmp/deb" --compression none \
    > "$tmp/package-deb.log" 2>&1 || { cat "$tmp/package-deb.log"; fail "scripts/package-deb failed"; }
deb=$(tail -n 1 "$tmp/package-deb.log")
[ -f "$deb" ] || fail "scripts/package-deb printed no package path: $deb"
dpkg-deb --info "$deb" > "$tmp/info"
dpkg-deb --contents "$deb" > "$tmp/contents"
dpkg-deb --field "$deb" Package Version Architecture Depends > "$tmp/fields"
grep -qx 'Package: sluice' "$tmp/fields" || fail "Package field: $(cat "$tmp/fields")"
grep -qx "Architecture: $(dpkg --print-architecture)" "$tmp/fields" || fail "Architecture field"
grep -q '^Depends: .*libc6' "$tmp/fields" || grep -q '^Depends: adduser' "$tmp/fields" || fail "Depends field: $(cat "$tmp/fields")"
for f in ./usr/bin/sluice ./usr/bin/sluice-tune ./lib/systemd/system/sluice.service \
    ./lib/systemd/system/sluice-tune.service ./etc/sluice/sluice.properties \
    ./usr/share/doc/sluice/copyright; do
    grep -q " $f\$" "$tmp/contents" || fail "the package lacks $f"
done
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = /etc/sluice/sluice.properties ] ||
    fail "conffiles should list /etc/sluice/sluice.properties"
say "built $(basename "$deb"): $(grep '^Depends' "$tmp/fields")"

# --- install -----------------------------------------------------------------------------------

installed=true
dpkg_run -i "$deb"
[ "$(status_of)" = installed ] || fail "dpkg status after install: $(status_of)"
timeout 60 dpkg --verify sluice > "$tmp/verify" 2>&1 || fail "dpkg --verify: $(cat "$tmp/verify")"
{ [ -x /usr/bin/sluice ] && [ -x /usr/bin/sluice-tune ]; } || fail "binaries not installed"
[ "$(timeout 10 /usr/bin/sluice --version)" = "sluice $(dpkg-deb --field "$deb" Version)" ] ||
    fail "/usr/bin/sluice --version: $(/usr/bin/sluice --version)"
timeout 30 /usr/bin/sluice-tune --help >/dev/null || fail "/usr/bin/sluice-tune --help"
grep -qx 'ExecStart=/usr/bin/sluice serve --config /etc/sluice/sluice.properties' \
    /lib/systemd/system/sluice.service || fail "sluice.service ExecStart"
grep -qx 'LimitMEMLOCK=infinity' /lib/systemd/system/sluice.service || fail "sluice.service LimitMEMLOCK"
grep -qx 'ExecStart=/usr/bin/sluice-tune apply --state-dir /var/lib/sluice/tuning' \
    /lib/systemd/system/sluice-tune.service || fail "sluice-tune.service ExecStart"
grep -qx 'listeners=PLAINTEXT://127.0.0.1:9092' /etc/sluice/sluice.properties || fail "default listeners"
grep -qx 'log.dirs=/var/lib/sluice/data' /etc/sluice/sluice.properties || fail "default log.dirs"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd sluice) || fail "no user sluice"
[ "$(getent group sluice | cut -d: -f3)" = "$gid" ] || fail "user sluice is not in group sluice"
[ "$uid" -lt 1000 ] || fail "sluice is not a system user (uid $uid)"
[ "$home" = /var/lib/sluice ] || fail "home of sluice: $home"
case "$shell" in */nologin|/bin/false) ;; *) fail "shell of sluice: $shell" ;; esac
for d in /var/lib/sluice /var/lib/sluice/data; do
    [ "$(stat -c '%U:%G %a' "$d")" = "sluice:sluice 750" ] || fail "$d: $(stat -c '%U:%G %a' "$d")"
done
if $with_systemd; then
    systemctl is-enabled --quiet sluice 2>/dev/null && fail "the package enabled sluice.service"
    systemctl is-active --quiet sluice && fail "the package started sluice.service"
fi
say "installed: files, user sluice (uid $uid), /var/lib/sluice, default config"

# --- run ---------------------------------------------------------------------------------------

port=$(free_port)
admin_port=$(free_port)
cores=$(( $(nproc) < 2 ? 1 : 2 ))
sed -i -e "s|^listeners=.*|listeners=PLAINTEXT://127.0.0.1:$port|" \
    -e "s/^sluice.admin.listen=.*/sluice.admin.listen=127.0.0.1:$admin_port/" \
    /etc/sluice/sluice.properties
echo "cores=$cores" >> /etc/sluice/sluice.properties

if $with_systemd; then
    timeout 120 systemctl start sluice || fail "systemctl start sluice"
    mode="systemctl start sluice"
else
    # What the unit does: user and group sluice, no new privileges, working directory /, a clean
    # environment, LimitMEMLOCK=infinity (glommio needs >= 512 KiB) and LimitNOFILE=1048576.
    (
        cd /
        ulimit -l unlimited 2>/dev/null || [ "$(ulimit -l)" = unlimited ] || [ "$(ulimit -l)" -ge 512 ] ||
            { echo "cannot raise the locked-memory limit to 512 KiB (ulimit -l is $(ulimit -l))"; exit 1; }
        ulimit -n 1048576 2>/dev/null || true
        exec setpriv --reuid=sluice --regid=sluice --init-groups --no-new-privs -- \
            env -i PATH=/usr/bin:/bin SLUICE_LOG=info \
            /usr/bin/sluice serve --config /etc/sluice/sluice.properties
    ) 2> "$tmp/broker.log" &
    pid=$!
    mode="setpriv --reuid=sluice /usr/bin/sluice serve --config /etc/sluice/sluice.properties"
fi
deadline=$((SECONDS + 60))
until accepts "$port"; do
    if $with_systemd; then
        systemctl is-failed --quiet sluice && fail "sluice.service failed"
    else
        kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; pid=""; fail "the broker exited"; }
    fi
    [ $SECONDS -lt $deadline ] || fail "no connection on 127.0.0.1:$port within 60 s"
    sleep 0.1
done
if $with_systemd; then
    pid=$(systemctl show -p MainPID --value sluice)
fi
[ "$(stat -c %U "/proc/$pid")" = sluice ] || fail "the broker runs as $(stat -c %U "/proc/$pid")"
say "broker accepting on 127.0.0.1:$port ($mode, $cores shards)"

record="package-test $$ $(date +%s)"
if command -v kcat >/dev/null; then
    client=kcat
    printf '%s\n' "$record" | timeout 30 kcat -b "127.0.0.1:$port" -t package-test -P ||
        fail "kcat produce failed"
    got=$(timeout 30 kcat -b "127.0.0.1:$port" -t package-test -C -e -q -o beginning) ||
        fail "kcat consume failed"
else
    client="sluice produce/consume"
    printf '%s\n' "$record" | timeout 30 /usr/bin/sluice produce package-test --bootstrap "127.0.0.1:$port" \
        > /dev/null || fail "sluice produce failed"
    got=$(timeout 30 /usr/bin/sluice consume package-test --bootstrap "127.0.0.1:$port" --from-beginning \
        --max-messages 1 --timeout-ms 20000) || fail "sluice consume failed"
fi
[ "$got" = "$record" ] || fail "consumed '$got', produced '$record'"
[ "$(stat -c %U /var/lib/sluice/data/package-test-0)" = sluice ] ||
    fail "no partition directory owned by sluice in /var/lib/sluice/data"
say "one record produced and consumed ($client), stored in /var/lib/sluice/data"

if $with_systemd; then
    timeout 330 systemctl stop sluice || fail "systemctl stop sluice"
    [ "$(systemctl show -p Result --value sluice)" = success ] ||
        fail "sluice.service stopped with result $(systemctl show -p Result --value sluice)"
else
    kill -TERM "$pid"
    rc=0
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && fail "the broker did not stop within 60 s of SIGTERM"
    wait "$pid" || rc=$?
    pid=""
    [ "$rc" -eq 0 ] || fail "the broker exited with status $rc after SIGTERM"
    grep -q 'stopped cleanly' "$tmp/broker.log" || fail "no 'stopped cleanly' in the broker log"
fi
[ -e /var/lib/sluice/data/.clean_shutdown ] || fail "no clean-shutdown marker after the stop"
say "SIGTERM: stopped cleanly"

# --- purge with data ---------------------------------------------------------------------------

dpkg_run --purge sluice
[ "$(status_of)" = not-installed ] || fail "dpkg status after purge: $(status_of)"
for f in /usr/bin/sluice /usr/bin/sluice-tune /lib/systemd/system/sluice.service \
    /lib/systemd/system/sluice-tune.service /etc/sluice /usr/share/doc/sluice; do
    [ ! -e "$f" ] || fail "$f is still there after the purge"
done
[ -d /var/lib/sluice/data/package-test-0 ] || fail "the purge deleted the broker's data"
getent passwd sluice >/dev/null || fail "the purge removed user sluice but kept files it owns"
grep -q 'kept /var/lib/sluice' "$tmp/dpkg.log" || fail "the purge did not say it kept the data"
say "purged: files and config gone, the data and the user kept"
rm -rf /var/lib/sluice
userdel sluice
getent group sluice >/dev/null && groupdel sluice

# --- reinstall, remove, purge without data -----------------------------------------------------

dpkg_run -i "$deb"
echo '# edited by tests/package/run.sh' >> /etc/sluice/sluice.properties
dpkg_run -i "$deb"
grep -q '^# edited by tests/package/run.sh' /etc/sluice/sluice.properties ||
    fail "reinstalling replaced the edited /etc/sluice/sluice.properties"
dpkg_run --remove sluice
[ "$(status_of)" = config-files ] || fail "dpkg status after remove: $(status_of)"
[ ! -e /usr/bin/sluice ] || fail "/usr/bin/sluice is still there after remove"
[ -f /etc/sluice/sluice.properties ] || fail "remove deleted the configuration"
getent passwd sluice >/dev/null || fail "remove deleted user sluice"
dpkg_run --purge sluice
installed=false
[ "$(status_of)" = not-installed ] || fail "dpkg status after purge: $(status_of)"
[ ! -e /etc/sluice ] || fail "/etc/sluice is still there after the purge"
[ ! -e /var/lib/sluice ] || fail "the purge kept an empty /var/lib/sluice: $(find /var/lib/sluice)"
! getent passwd sluice >/dev/null || fail "the purge kept user sluice although it owned nothing"
! getent group sluice >/dev/null || fail "the purge kept group sluice"
say "reinstall keeps the edited conffile, remove keeps config and user, purge removes them"

echo "package: all checks passed in $((SECONDS - started)) s"
