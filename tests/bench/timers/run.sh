#!/usr/bin/env bash
# Timer precision beside a computing thread: the test app `timer-bench` (one
# thread spins without system calls, another sleeps a random 1-9 ms N times)
# on the hvt monitor, on the kvm platform under QEMU q35 (TCG; reported, not
# targeted) and natively (the same static musl program) pinned to one CPU
# with taskset -c 0, in one run, side by side: median/p90/max oversleep and
# the ratios to native. The idle_* lines are the same sleeps before the
# spinner starts (the platform's idle wait alone).
#
# Target: median oversleep beside the spinner <= 1 ms on hvt.
#
# Usage: tests/bench/timers/run.sh [N [SEED]]   (defaults 300 1)
#        BENCH_SKIP_BUILD=1   use the existing binaries and images
#        BENCH_SKIP_KVM=1     leave out the QEMU run
# Exit status: 0 when everything ran (whether or not the target is met),
# 1 when a build or a run fails. Results: docs/benchmarks-threads.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
args=("${1:-300}" "${2:-1}")
for a in "${args[@]}"; do
    case $a in
    '' | *[!0-9]*) echo "run.sh: arguments must be numbers, got '$a'" >&2; exit 2 ;;
    esac
done

monitor=target/release/unikernel-hvt
builder=target/release/cargo-unikernel
image=tests/apps/target/unikernel/hvt/timer-bench
kvm_image=tests/apps/target/unikernel/kvm/timer-bench
native=tests/apps/target/x86_64-unknown-linux-musl/release/timer-bench

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    echo "== building (workspace release, timer-bench images, native musl timer-bench)"
    (unset CARGO_TARGET_DIR
     cargo build --release --quiet
     "$builder" build --manifest-path tests/apps/timer-bench/Cargo.toml >/dev/null
     "$builder" build --platform kvm --manifest-path tests/apps/timer-bench/Cargo.toml \
         -o "$kvm_image" >/dev/null
     cargo build --release --quiet --target x86_64-unknown-linux-musl \
         --manifest-path tests/apps/Cargo.toml -p timer-bench)
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
uptime | sed 's/^/== host load: /'
run native1 taskset -c 0 "$native" "${args[@]}"
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    run hvt "$monitor" "$image" -- "${args[@]}"
else
    echo "run.sh: /dev/kvm is not usable: no hvt figures" >&2
    : >"$out/hvt"
fi
if [ -z "${BENCH_SKIP_KVM:-}" ] && command -v qemu-system-x86_64 >/dev/null && [ -e "$kvm_image" ]; then
    run kvm "$builder" run "$kvm_image" --machine q35 --accel tcg --timeout 300 -- "${args[@]}"
else
    echo "run.sh: no kvm (QEMU TCG) figures" >&2
    : >"$out/kvm"
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
hvt, kvm, n1 = load("hvt"), load("kvm"), load("native1")
keys = [k for k in n1 if k.endswith(("_ns_median", "_ns_p90", "_ns_max", "_ns_min"))]
def us(v):
    return f"{v / 1000:.0f}" if v is not None else "-"
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"
print()
print("oversleep in us (how much longer than asked a 1-9 ms sleep took)")
print(f"{'metric':26} {'hvt':>8} {'kvm TCG':>8} {'native 1cpu':>12} {'hvt/native':>11} {'kvm/native':>11}")
for k in keys:
    h, q, n = hvt.get(k), kvm.get(k), n1.get(k)
    print(f"{k:26} {us(h):>8} {us(q):>8} {us(n):>12} {ratio(h, n):>11} {ratio(q, n):>11}")
print()
h = hvt.get("oversleep_ns_median")
if h is None:
    print("target median oversleep beside a spinning thread on hvt <= 1 ms: NOT MEASURED")
else:
    print(f"target median oversleep beside a spinning thread on hvt <= 1 ms: {h / 1e6:.3f} ms "
          f"{'PASS' if h <= 1_000_000 else 'FAIL'}")
PY
