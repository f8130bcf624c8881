#!/usr/bin/env bash
# System-call cost, side by side in one run (docs/benchmarks.md): the same
# probe (tests/apps/probe syscallbench) natively (built by plain cargo: musl's
# wrappers) and on hvt (built by cargo unikernel: the builder's shim, which
# enters the runtime through the AT_SYSINFO gateway). ns per call, medians
# of RUNS runs:
#   gateway_getppid   getppid through libc::syscall (the shim on hvt)
#   syscall_getppid   getppid through a `syscall` instruction of the probe's own
#   libc_read_ebadf   read(-1) through libc's read (the shim's errno path)
# On kvm-pvm the `syscall` instruction costs a host round trip; the gateway
# does not.
#   RUNS=5 tests/bench/syscall/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-5}
BIN=$(pwd)/target/release
APPS=$(pwd)/tests/apps
[ -c /dev/kvm ] || { echo "syscall bench: /dev/kvm is missing: hvt cannot run here" >&2; exit 1; }
cargo build --release -q -p cargo-unikernel -p unikernel-hvt
"$BIN/cargo-unikernel" build "$APPS/probe" >/dev/null
IMG=$APPS/target/unikernel/hvt/probe
# Built after the image: the two builds share the musl target directory.
(cd "$APPS" && cargo build --release -q --target x86_64-unknown-linux-musl -p probe)
NATIVE=$APPS/target/x86_64-unknown-linux-musl/release/probe
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
declare -A N G
for _ in $(seq "$RUNS"); do
    while read -r _ k v _; do N[$k]+=" $v"; done < <("$NATIVE" syscallbench | grep '^RESULT')
    while read -r _ k v _; do G[$k]+=" $v"; done < <("$BIN/unikernel-hvt" "$IMG" -- syscallbench | grep '^RESULT')
done
printf '# system calls: RUNS=%s, %s CPUs, load %s\n' "$RUNS" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)"
printf '%-18s %10s %10s %8s  (ns per call, medians)\n' call native hvt hvt/native
for k in gateway_getppid syscall_getppid libc_read_ebadf; do
    n=$(median ${N[$k]}); g=$(median ${G[$k]})
    printf '%-18s %10.1f %10.1f %8s\n' "$k" "$n" "$g" "$(python3 -c "print(f'{$g/$n:.2f}')")"
done
g=$(median ${G[gateway_getppid]}); s=$(median ${G[syscall_getppid]})
printf 'on hvt, syscall instruction / gateway: %s\n' "$(python3 -c "print(f'{$s/$g:.1f}')")"
