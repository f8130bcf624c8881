#!/usr/bin/env bash
# Launch-to-exit of a packed C hello and a packed Go hello on hvt against
# the same static binaries run natively, interleaved in one run
# (docs/pack.md). Reported, no target. Needs musl-gcc (Debian's
# musl-tools), go (golang-go) and /dev/kvm.
#   RUNS=50 tests/bench/pack/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-50}
cargo build --release -q -p cargo-unikernel -p unikernel-hvt
W=$(mktemp -d "$(pwd)/target/pack-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
musl-gcc -static -O2 -o "$W/hello-min-c" tests/apps-c/hello-min.c
target/release/cargo-unikernel pack "$W/hello-min-c" -o "$W/hello-min-c.img" >/dev/null
mkdir "$W/gohello"
printf 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from go") }\n' >"$W/gohello/main.go"
printf 'module gohello\n\ngo 1.19\n' >"$W/gohello/go.mod"
(cd "$W/gohello" && CGO_ENABLED=0 GOCACHE="$W/gocache" go build -o "$W/hello-go" .)
target/release/cargo-unikernel pack "$W/hello-go" -o "$W/hello-go.img" >/dev/null
python3 - "$RUNS" "$W" <<'PY'
import statistics, subprocess, sys, time
runs, w = int(sys.argv[1]), sys.argv[2]
progs = {
    "packed C hello on hvt": (["target/release/unikernel-hvt", f"{w}/hello-min-c.img"], b"hello from hello-min.c\n"),
    "the same C binary natively": ([f"{w}/hello-min-c"], b"hello from hello-min.c\n"),
    "packed Go hello on hvt": (["target/release/unikernel-hvt", f"{w}/hello-go.img"], b"hello from go\n"),
    "the same Go binary natively": ([f"{w}/hello-go"], b"hello from go\n"),
}
times = {k: [] for k in progs}
for _ in range(runs):
    for name, (cmd, want) in progs.items():
        t = time.perf_counter_ns()
        r = subprocess.run(cmd, capture_output=True)
        times[name].append((time.perf_counter_ns() - t) / 1000)
        if r.returncode != 0 or r.stdout != want:
            sys.exit(f"BROKEN: {name}: exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}")
print(f"launch-to-exit, {runs} interleaved runs each, microseconds")
print(f"  {'':28s} {'median':>8s} {'min':>8s} {'p90':>8s}")
for name, v in times.items():
    v.sort()
    print(f"  {name:28s} {statistics.median(v):8.0f} {v[0]:8.0f} {v[int(len(v) * 0.9)]:8.0f}")
m = [statistics.median(v) for v in times.values()]
print(f"  ratio hvt/native (median): C {m[0] / m[1]:.1f}, Go {m[2] / m[3]:.1f}")
PY
ls -l "$W/hello-min-c" "$W/hello-min-c.img" "$W/hello-go" "$W/hello-go.img" | awk '{print "  " $5 " bytes  " $9}'
