#!/usr/bin/env bash
# The hvt benchmarks, one entry point. Builds what it needs, then measures:
#   1. launch-to-exit wall time of `unikernel-hvt hello-min`, `kvm-floor` and
#      the native static musl hello-min (interleaved runs; median, min, p90);
#   2. the image size (kernel part, app part, file) against the 1 MiB target;
#   3. the smallest `--mem` with which hello-min still runs, and whether 2M does.
# Ends with a PASS/FAIL summary of the targets. Exit status 0 unless something
# is broken (a build fails, a run prints the wrong thing or exits non-zero).
#
# Usage: tests/bench/run.sh [RUNS]      (or BENCH_RUNS=N; default 50, at least 20)
#        BENCH_SKIP_BUILD=1   use the existing binaries and image
#        BENCH_SKIP_MEM=1     skip the --mem bisection
#        BENCH_WHERE=1        also run where.py: per-phase breakdown of hvt and
#                             kvm-floor from `perf trace` (needs perf, root)
# Results: docs/benchmarks.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
runs=${1:-${BENCH_RUNS:-50}}
case $runs in
'' | *[!0-9]*) echo "run.sh: RUNS must be a number, got '$runs'" >&2; exit 2 ;;
esac
if [ "$runs" -lt 20 ]; then
    echo "run.sh: RUNS must be at least 20 (got $runs)" >&2
    exit 2
fi

monitor=target/release/unikernel-hvt
builder=target/release/cargo-unikernel
image=tests/apps/target/unikernel/hvt/hello-min
native=tests/apps/target/x86_64-unknown-linux-musl/release/hello-min
floor_dir=tests/bench/kvm-floor
floor=${CARGO_TARGET_DIR:-$floor_dir/target}/release/kvm-floor

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    echo "== building (workspace release, kvm-floor, hello-min image, native musl hello-min)"
    # The workspace builds use their default target dirs (the image and the
    # native binary paths above rely on them); only kvm-floor may follow
    # CARGO_TARGET_DIR.
    (unset CARGO_TARGET_DIR; cargo build --release --quiet)
    cargo build --release --quiet --manifest-path "$floor_dir/Cargo.toml"
    (unset CARGO_TARGET_DIR
     "$builder" build --manifest-path tests/apps/hello-min/Cargo.toml >/dev/null
     cargo build --release --quiet --target x86_64-unknown-linux-musl \
         --manifest-path tests/apps/Cargo.toml -p hello-min)
fi
for f in "$monitor" "$builder" "$image" "$native" "$floor"; do
    [ -e "$f" ] || { echo "run.sh: $f is missing (build failed?)" >&2; exit 1; }
done
[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "run.sh: /dev/kvm is not usable" >&2; exit 1; }

python3 tests/bench/bench.py --runs "$runs" \
    --monitor "$monitor" --builder "$builder" --image "$image" \
    --floor "$floor" --native "$native" ${BENCH_SKIP_MEM:+--skip-mem}
if [ -n "${BENCH_WHERE:-}" ]; then
    echo
    echo "== where the time goes (perf trace)"
    python3 tests/bench/where.py "$monitor" "$image" "$floor" 20
fi
