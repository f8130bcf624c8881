#!/usr/bin/env bash
# Memory as Linux gives it (docs/pack.md "Memory"): what demand paging
# costs, measured side by side in one run (interleaved, medians).
#   1. jaq 2.3.0 (crates.io, unmodified, mimalloc) on a 3,000,000-element
#      array: natively against packed on hvt with --mem 512M (target: at
#      most 1.2x), and the 1,000,000-element array in the default 64 MiB
#      guest (it used to die of ENOMEM in mimalloc's reservations).
#   2. First touch of a fresh 256 MiB mapping (touch.c): natively, packed
#      on hvt on first touch, and packed on hvt with MAP_POPULATE.
# Needs /dev/kvm, musl-gcc (musl-tools), the x86_64-unknown-linux-musl
# rustup target and, once, network access to crates.io for jaq (kept in
# $JAQ_ROOT, default ~/.cache/unikernel-bench/jaq).
#   RUNS=5 tests/bench/memory/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-5}
JAQ_ROOT=${JAQ_ROOT:-$HOME/.cache/unikernel-bench/jaq}
cargo build --release -q -p cargo-unikernel -p unikernel-hvt
if [ ! -x "$JAQ_ROOT/bin/jaq" ]; then
    echo "== building jaq 2.3.0 (static musl) into $JAQ_ROOT"
    cargo install -q jaq --version 2.3.0 --locked --target x86_64-unknown-linux-musl --root "$JAQ_ROOT"
fi
W=$(mktemp -d "$(pwd)/target/memory-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
pack() { # quiet unless it fails
    target/release/cargo-unikernel pack "$@" >"$W/pack.log" 2>&1 || { cat "$W/pack.log" >&2; exit 1; }
}
pack "$JAQ_ROOT/bin/jaq" -o "$W/jaq512.img" --mem 512M
pack "$JAQ_ROOT/bin/jaq" -o "$W/jaq64.img"
musl-gcc -static -O2 -o "$W/touch" tests/bench/memory/touch.c
pack "$W/touch" -o "$W/touch.img" --mem 512M
python3 - "$RUNS" "$W" "$JAQ_ROOT/bin/jaq" <<'PY'
import re, statistics, subprocess, sys, time
runs, w, jaq = int(sys.argv[1]), sys.argv[2], sys.argv[3]
hvt = "target/release/unikernel-hvt"
big = ["-n", "[range(3000000)] | map(. * 2) | add"]
small = ["-n", "[range(1000000)] | map(. * 2) | add"]

def run(cmd, want):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0 or want not in r.stdout:
        sys.exit(f"BROKEN: {cmd}: exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr[-400:]!r}")
    return dt, r.stdout

print(f"== 1. jaq, {runs} interleaved runs each, seconds (median, min)")
cases = {
    "native, 3M elements": [jaq] + big,
    "hvt --mem 512M, 3M elements": [hvt, f"{w}/jaq512.img", "--"] + big,
}
t = {k: [] for k in cases}
for _ in range(runs):
    for k, cmd in cases.items():
        t[k].append(run(cmd, "8999997000000")[0])
for k, v in t.items():
    print(f"  {k:32s} {statistics.median(v):7.2f} {min(v):7.2f}")
ratio = statistics.median(t["hvt --mem 512M, 3M elements"]) / statistics.median(t["native, 3M elements"])
dt, _ = run([hvt, f"{w}/jaq64.img", "--"] + small, "999999000000")
print(f"  hvt default 64 MiB, 1M elements  {dt:7.2f} (runs)")

print(f"== 2. first touch of 256 MiB, {runs} interleaved runs each, milliseconds in the program (median)")
touch = {
    "native": [f"{w}/touch", "256"],
    "hvt, on first touch": [hvt, f"{w}/touch.img", "--", "256"],
    "hvt, MAP_POPULATE": [hvt, f"{w}/touch.img", "--", "256", "populate"],
    "native, MAP_POPULATE": [f"{w}/touch", "256", "populate"],
}
m = {k: [] for k in touch}
for _ in range(runs):
    for k, cmd in touch.items():
        out = run(cmd, " ms")[1]
        m[k].append(float(re.match(r"([0-9.]+) ms", out).group(1)))
for k, v in m.items():
    print(f"  {k:24s} {statistics.median(v):8.1f}")
print(f"== summary")
verdict = "PASS" if ratio <= 1.2 else "FAIL"
print(f"  jaq 3M hvt/native = {ratio:.2f} (target <= 1.20)  {verdict}")
PY
