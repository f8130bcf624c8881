#!/bin/sh
# Launch-to-exit time of `unikernel-hvt IMAGE` against the kvm-floor baseline.
# Usage: tests/bench/kvm-floor/compare.sh MONITOR IMAGE [RUNS]
# (build kvm-floor first: cargo build --release --manifest-path tests/bench/kvm-floor/Cargo.toml)
set -eu
monitor=$1 image=$2 runs=${3:-50}
floor=${KVM_FLOOR:-${CARGO_TARGET_DIR:-$(dirname "$0")/target}/release/kvm-floor}
measure() {
    total=0 best=999999999
    i=0
    while [ $i -lt "$runs" ]; do
        s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s%N)
        d=$(( (e - s) / 1000 )); total=$((total + d)); [ $d -lt $best ] && best=$d
        i=$((i + 1))
    done
    echo "$((total / runs)) $best"
}
set -- $(measure "$floor"); fm=$1 fb=$2
set -- $(measure "$monitor" "$image"); mm=$1 mb=$2
echo "kvm-floor:     mean ${fm} us, min ${fb} us"
echo "unikernel-hvt: mean ${mm} us, min ${mb} us"
echo "ratio (mean):  $(awk "BEGIN { printf \"%.2f\", $mm / $fm }")"
