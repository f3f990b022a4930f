# shellcheck shell=bash
# What the benchmark scripts (compare-kafka.sh, soak.sh, zero-copy.sh) share. Sourced from the
# repository root after argument parsing; sets:
#   $sluice      the binary: $SLUICE_BIN, or a release build (honouring CARGO_TARGET_DIR)
#   generator    extra `sluice bench` arguments: --cpus $GENERATOR_CPUS when set
# and defines free_port, wait_port PORT, and bench ARGS... (one JSON object on stdout).

if [ -n "${SLUICE_BIN:-}" ]; then
    sluice=$SLUICE_BIN
else
    cargo build -q --release --features bench
    sluice=${CARGO_TARGET_DIR:-target}/release/sluice
fi
generator=()
[ -n "${GENERATOR_CPUS:-}" ] && generator=(--cpus "$GENERATOR_CPUS")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
bench() { "$sluice" bench "$@" "${generator[@]}" --json; }
