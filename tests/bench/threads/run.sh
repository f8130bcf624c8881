#!/usr/bin/env bash
# Thread benchmarks: thread spawn+join latency and a futex ping-pong between
# two threads, measured by the test app `thread-bench` on the hvt monitor and
# natively (the same static musl program), side by side with the ratio
# hvt/native. The unikernel has one CPU, so the native program is measured
# twice: pinned to one CPU (taskset -c 0; the like-for-like comparison and
# the one the target is judged on) and unpinned (all host CPUs).
#
# Target: futex ping-pong median, hvt / native (1 CPU) <= 5.
#
# Usage: tests/bench/threads/run.sh [SPAWN_ITERS [ROUND_TRIPS [BATCHES]]]
#        (defaults 200 10000 7, passed to thread-bench)
#        BENCH_SKIP_BUILD=1   use the existing binaries and image
# Exit status: 0 when everything ran (whether or not the target is met),
# 1 when a build or a run fails. Results: docs/benchmarks-threads.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
args=("${1:-200}" "${2:-10000}" "${3:-7}")
for a in "${args[@]}"; do
    case $a in
    '' | *[!0-9]*) echo "run.sh: arguments must be numbers, got '$a'" >&2; exit 2 ;;
    esac
done

monitor=target/release/unikernel-hvt
builder=target/release/cargo-unikernel
image=tests/apps/target/unikernel/hvt/thread-bench
native=tests/apps/target/x86_64-unknown-linux-musl/release/thread-bench

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    echo "== building (workspace release, thread-bench image, native musl thread-bench)"
    # The image and native paths above are the default target dirs.
    (unset CARGO_TARGET_DIR
     cargo build --release --quiet
     "$builder" build --manifest-path tests/apps/thread-bench/Cargo.toml >/dev/null
     cargo build --release --quiet --target x86_64-unknown-linux-musl \
         --manifest-path tests/apps/Cargo.toml -p thread-bench)
fi
for f in "$monitor" "$builder" "$image" "$native"; do
    [ -e "$f" ] || { echo "run.sh: $f is missing (build failed?)" >&2; exit 1; }
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # NAME COMMAND...: run, keep stdout in $out/NAME, fail loudly
    local name=$1
    shift
    echo "== $name: $*"
    if ! "$@" >"$out/$name" 2>"$out/$name.err"; then
        echo "run.sh: $name failed:" >&2
        cat "$out/$name" "$out/$name.err" >&2
        exit 1
    fi
}
run native1 taskset -c 0 "$native" "${args[@]}"
run native "$native" "${args[@]}"
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    run hvt "$monitor" "$image" -- "${args[@]}"
else
    echo "run.sh: /dev/kvm is not usable: no hvt figures" >&2
    : >"$out/hvt"
fi

python3 - "$out" <<'PY'
import sys, os
d = sys.argv[1]
def load(name):
    vals = {}
    for line in open(os.path.join(d, name)):
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            vals[parts[0]] = int(parts[1])
    return vals
hvt, n1, nall = load("hvt"), load("native1"), load("native")
keys = [k for k in n1 if k.endswith(("_ns_median", "_ns_min", "_ns_p90"))]
print()
print(f"{'metric':28} {'hvt':>10} {'native 1cpu':>12} {'native all':>11} {'hvt/1cpu':>9} {'hvt/all':>8}")
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"
for k in ["cpus"] + keys:
    h = hvt.get(k)
    print(f"{k:28} {h if h is not None else '-':>10} {n1.get(k, '-'):>12} {nall.get(k, '-'):>11}"
          f" {ratio(h, n1.get(k)) if k != 'cpus' else '':>9} {ratio(h, nall.get(k)) if k != 'cpus' else '':>8}")
print()
h, n = hvt.get("futex_pingpong_ns_median"), n1.get("futex_pingpong_ns_median")
if h is None or not n:
    print("target futex ping-pong hvt/native(1 CPU) <= 5: NOT MEASURED")
else:
    r = h / n
    print(f"target futex ping-pong hvt/native(1 CPU) <= 5: {r:.2f} {'PASS' if r <= 5 else 'FAIL'}")
PY
