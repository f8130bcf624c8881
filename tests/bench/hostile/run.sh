#!/usr/bin/env bash
# The hostile guest's random mode at scale: the monitor test
# `hostile_guest_random_calls` (platform-hvt/monitor/tests/hostile.rs, its
# kernel in tests/hostile/kernel.c) booted again and again until the guest
# has made CALLS random hypercalls in all: mostly well-formed, one in a few
# thousand broken on purpose (bad pointers and lengths, unknown slots,
# wrong-size MMIO, calls without a device), block requests whose
# descriptors change while the monitor's I/O thread reads them. Every boot
# must end with a documented exit code and one monitor line, never a panic,
# a signal or a hang; the test fails otherwise.
#
# Prints the calls, boots, how the boots ended (by reason), time and calls/s.
# .ci/run makes 5,000 calls through the same test.
#
# Usage: tests/bench/hostile/run.sh [CALLS]   (default 1000000)
# Results: docs/security.md, "What is fuzzed".
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
calls=${1:-1000000}
case $calls in
'' | *[!0-9]*) echo "run.sh: CALLS must be a number, got '$calls'" >&2; exit 2 ;;
esac
[ -e /dev/kvm ] || { echo "run.sh: /dev/kvm is missing: the hostile guest cannot run" >&2; exit 1; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
HVT_HOSTILE_CALLS=$calls cargo test --release -p unikernel-hvt --test hostile \
    -- --exact hostile_guest_random_calls --nocapture >"$log" 2>&1 || status=$?
grep -E '^(hostile random:|  +[0-9]+  )' "$log" || true
if [ "$status" -ne 0 ]; then
    echo "run.sh: the hostile guest test failed (exit $status):" >&2
    tail -40 "$log" >&2
fi
exit "$status"
