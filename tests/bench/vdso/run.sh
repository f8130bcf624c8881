#!/usr/bin/env bash
# The vDSO's clock, side by side in one run (docs/benchmarks.md): the same
# static musl binary (tests/apps/probe clockbench) natively and on hvt:
# ns per clock_gettime(CLOCK_MONOTONIC) through libc (the vDSO when there
# is one), per Instant::now(), and per raw clock_gettime system call.
# Medians of RUNS runs. Target: clock_gettime on hvt <= 2x native.
#   RUNS=5 tests/bench/vdso/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-5}
BIN=$(pwd)/target/release
APPS=$(pwd)/tests/apps
cargo build --release -q -p cargo-unikernel -p unikernel-hvt
(cd "$APPS" && cargo build --release -q --target x86_64-unknown-linux-musl -p probe)
"$BIN/cargo-unikernel" build "$APPS/probe" >/dev/null
IMG=$APPS/target/unikernel/hvt/probe
NATIVE=$APPS/target/x86_64-unknown-linux-musl/release/probe
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
declare -A N G
for _ in $(seq "$RUNS"); do
    while read -r _ k v _; do N[$k]+=" $v"; done < <("$NATIVE" clockbench | grep '^RESULT')
    while read -r _ k v _; do G[$k]+=" $v"; done < <("$BIN/unikernel-hvt" "$IMG" -- clockbench | grep '^RESULT')
done
printf '%-14s %10s %10s %8s  (ns per call, medians of %s runs)\n' call native hvt ratio "$RUNS"
for k in clock_gettime instant_now syscall; do
    n=$(median ${N[$k]}); g=$(median ${G[$k]})
    r=$(python3 -c "print(f'{$g/$n:.2f}')")
    t=""; [ "$k" = clock_gettime ] && t="target <= 2.0"
    printf '%-14s %10.1f %10.1f %8s  %s\n' "$k" "$n" "$g" "$r" "$t"
done
