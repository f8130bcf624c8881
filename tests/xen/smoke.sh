#!/bin/bash
# tests/xen/smoke.sh - boot the platform-xen smoke kernel on real Xen (the
# test lab, tests/xen/lab.sh: Xen 4.17 + dom0 under QEMU TCG) and assert on what it printed
# and on its shutdown code. Also checks the failure paths: a wrong
# start_info magic (test hook) and an image without Xen notes.
#
#   tests/xen/smoke.sh            # all cases (~6 boots, ~2 minutes)
#   tests/xen/smoke.sh basic user # only the named cases
#
# Environment: UNIKERNEL_XEN_LAB (the lab script, default tests/xen/lab.sh),
# UNIKERNEL_XEN_CACHE (its cache, never in the repo), CARGO_TARGET_DIR
# (default /tmp/tgt-xen).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LAB=${UNIKERNEL_XEN_LAB:-$ROOT/tests/xen/lab.sh}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/tgt-xen}
KERNEL=$CARGO_TARGET_DIR/x86_64-unknown-none/release/xen-smoke
OUT=$(mktemp -d /tmp/xen-smoke.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

[ -x "$LAB" ] || { echo "smoke.sh: no lab script at $LAB (set UNIKERNEL_XEN_LAB=)" >&2; exit 2; }
if ! "$LAB" status >/dev/null; then
    echo "smoke.sh: the Xen lab is not set up yet: running '$LAB setup' (~4 min, needs root)" >&2
    "$LAB" setup
fi

echo "smoke.sh: building the smoke kernel" >&2
(cd "$ROOT/platform-xen/smoke" && cargo build --release --quiet)

fails=0
pass() { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }

# boot NAME KERNEL CMDLINE -> $OUT/NAME.out (console), .err (lab), .rc, .secs
boot() {
    local name=$1 kernel=$2 cmdline=$3 t0 rc=0
    t0=$(date +%s.%N)
    "$LAB" run "$kernel" --mem 32 --cmdline "$cmdline" --timeout 120 \
        >"$OUT/$name.out" 2>"$OUT/$name.err" || rc=$?
    echo "$rc" >"$OUT/$name.rc"
    echo "$(date +%s.%N) - $t0" | bc >"$OUT/$name.secs"
    echo "smoke.sh: [$name] exit $rc after $(printf %.1f "$(cat "$OUT/$name.secs")") s" >&2
}

# expect NAME REGEX: the console output of NAME has a line matching REGEX
expect() {
    if grep -Eq -- "$2" "$OUT/$1.out"; then pass "[$1] prints /$2/"
    else fail "[$1] expected a line matching /$2/; console was:"; sed 's/^/    | /' "$OUT/$1.out"; fi
}
expect_err() {
    if grep -Eq -- "$2" "$OUT/$1.err"; then pass "[$1] lab says /$2/"
    else fail "[$1] expected the lab to say /$2/; stderr was:"; sed 's/^/    | /' "$OUT/$1.err"; fi
}
expect_rc() {
    local rc; rc=$(cat "$OUT/$1.rc")
    if [ "$rc" = "$2" ]; then pass "[$1] exit code $2"; else fail "[$1] exit code $rc, expected $2"; fi
}
# the sleep line must show at least 50000 us
expect_slept() {
    local us; us=$(sed -n 's/^smoke: slept \([0-9]*\) us.*/\1/p' "$OUT/$1.out")
    if [ -n "$us" ] && [ "$us" -ge 50000 ]; then pass "[$1] slept $us us >= 50000 us"
    else fail "[$1] sleep line missing or too short: '$us'"; fi
}

case_basic() {
    boot basic "$KERNEL" "7 hello world"
    expect_rc basic 7
    expect basic '^smoke: start_info ok: nr_pages=8192 \(32 MiB\), cmdline="7 hello world"$'
    expect basic '^smoke: memory: builder mapped pfns 0\.\.0x[0-9a-f]+, platform mapped [1-9][0-9]* more pages'
    expect basic '^smoke: boot: entry -> first console line [0-9]+ us'
    expect basic '^smoke: pvclock: system time [0-9]+\.[0-9]{9} s .*wall clock 20[0-9]{2}-[0-9]{2}-[0-9]{2} '
    expect basic '^smoke: xenstore: domid=[1-9][0-9]* name=unikernel$'
    expect basic '^smoke: xenstore: missing key -> xenstore error ENOENT$'
    expect basic '^smoke: xenstore: watch event path=data/smoke token=smoketoken$'
    expect basic '^smoke: xenstore: directory of /local/domain/[0-9]+: .*\bdomid\b'
    expect basic '^smoke: grant table: [0-9]+ entries; ref 8 grants mfn 0x[0-9a-f]+ to dom0 \(flags 0x5\)$'
    expect basic '^smoke: grant table: ref 8 ended$'
    expect_slept basic
    expect basic '^smoke: done, shutting down with code 7$'
    if grep -q 'CHECK FAILED' "$OUT/basic.out"; then fail "[basic] a check failed"; fi
}

case_poweroff() {
    boot poweroff "$KERNEL" ""
    expect_rc poweroff 0
    expect poweroff '^smoke: done, shutting down with code 0$'
}

case_user() {
    boot user "$KERNEL" "9 xen.smoke=user"
    expect_rc user 9
    expect user '^smoke: entering guest user mode$'
    expect user '^smoke: syscall write from guest user mode \(cs=0xe033, '
    expect user '^smoke: hello from guest user mode via syscall$'
    expect user '^smoke: syscall exit\(9\) from guest user mode$'
}

case_fault() {
    boot fault "$KERNEL" "0 xen.smoke=fault"
    expect_rc fault 253
    expect fault '^xen: fatal page fault \(#PF\) in guest kernel mode at rip=0x[0-9a-f]+ error=0x[0-9a-f]+ address=0x700000000000$'
}

case_magic() {
    boot magic "$KERNEL" "0 xen.test=bad-magic"
    expect_rc magic 253
    expect magic '^xen: cannot boot: start_info magic is "xen-3\.0-x86_32p", expected "xen-3\.0-x86_64"'
    if grep -q '^smoke:' "$OUT/magic.out"; then fail "[magic] the kernel went on after a wrong magic"; else pass "[magic] nothing ran after the check"; fi
}

case_nonotes() {
    objcopy --remove-section .note.Xen "$KERNEL" "$OUT/xen-smoke-nonotes"
    boot nonotes "$OUT/xen-smoke-nonotes" "0"
    expect_rc nonotes 125
    expect_err nonotes 'xl create failed.*no loader found: Invalid kernel'
}

cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(basic poweroff user fault magic nonotes)
for c in "${cases[@]}"; do "case_$c"; done

if [ -e "$OUT/basic.out" ]; then
    echo "smoke.sh: guest boot times (basic): $(grep -E '^smoke: (boot|vcpu0)' "$OUT/basic.out" | sed 's/^smoke: //' | tr '\n' ';')" >&2
fi
if [ "$fails" -gt 0 ]; then echo "smoke.sh: $fails check(s) failed" >&2; exit 1; fi
echo "smoke.sh: all checks passed" >&2
