#!/usr/bin/env bash
# The kvm platform's launch benchmark (see kvm.py): builds the toolchain,
# hello-min for kvm and hvt, and QEMU's floor (kvm-floor-pvh/floor.S, with
# gcc and ld), then prints medians and ratios.
#   tests/bench/kvm.sh [--runs N] [--accel-kvm]   (extra options go to kvm.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release -q
builder=$target/release/cargo-unikernel
"$builder" build --platform kvm tests/apps/hello-min -o "$work/hello-min-kvm" >/dev/null
"$builder" build --platform hvt tests/apps/hello-min -o "$work/hello-min-hvt" >/dev/null
cc -c -o "$work/floor.o" tests/bench/kvm-floor-pvh/floor.S
ld -m elf_x86_64 -nostdlib -static -T tests/bench/kvm-floor-pvh/link.ld -o "$work/floor.elf" "$work/floor.o"

python3 tests/bench/kvm.py --builder "$builder" --monitor "$target/release/unikernel-hvt" \
    --kvm-image "$work/hello-min-kvm" --hvt-image "$work/hello-min-hvt" \
    --floor "$work/floor.elf" "$@"
