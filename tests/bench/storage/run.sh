#!/usr/bin/env bash
# Storage benchmarks, side by side in one run (docs/benchmarks-storage.md):
# the same musl binaries (tests/apps/fs-bench, tests/apps/fs-sqlite) run
# natively on a host file and in the unikernel on hvt, whose data volume
# is a file of the same host filesystem (made by `cargo unikernel disk
# create`):
#  - sequential write + fsync of SIZE MiB (1 MiB writes), sequential read;
#  - 4 KiB random reads and writes (ops/s; the writes end with one fsync);
#  - SQLite inserts/s in transactions of 100 rows, DELETE and WAL modes;
#  - the crash test with KILLS kills (SIGKILL at random moments; every
#    fsync-acknowledged record must survive and fsck.fat must pass).
# Medians of RUNS runs. Needs /dev/kvm, python3, fsck.fat and musl-gcc.
#   RUNS=3 SIZE=256 OPS=20000 TXNS=200 KILLS=100 tests/bench/storage/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-3}
SIZE=${SIZE:-256}
OPS=${OPS:-20000}
TXNS=${TXNS:-200}
KILLS=${KILLS:-100}
ROOT=$(pwd)
BIN=$ROOT/target/release
APPS=$ROOT/tests/apps
NATIVE=$APPS/target/x86_64-unknown-linux-musl/release

cargo build --release -q -p cargo-unikernel -p unikernel-hvt
(cd "$APPS" && cargo build --release -q --target x86_64-unknown-linux-musl -p fs-bench -p fs-sqlite)
# One directory on one host filesystem for both sides.
W=$(mktemp -d "$ROOT/target/storage-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
"$BIN/cargo-unikernel" build --manifest-path "$APPS/fs-bench/Cargo.toml" -o "$W/fs-bench.img" >/dev/null
"$BIN/cargo-unikernel" build --manifest-path "$APPS/fs-sqlite/Cargo.toml" -o "$W/fs-sqlite.img" >/dev/null
"$BIN/cargo-unikernel" disk create "$W/vol.img" --size "$((SIZE * 2 + 128))M" >/dev/null
mkdir "$W/native"
echo "host filesystem: $(df -T "$W" | awk 'NR==2 {print $2}') ($W)"

value() { awk '/^RESULT/ {print $3} /^inserts\/s/ {print $2}'; }
native_bench() { "$NATIVE/fs-bench" "$1" "$W/native/f" "${@:2}" | value; }
guest_bench() { "$BIN/unikernel-hvt" --disk "data=$W/vol.img" "$W/fs-bench.img" -- "$1" /data/f "${@:2}" | value; }
native_sqlite() { rm -f "$W/native/t.db"*; "$NATIVE/fs-sqlite" bench "$1" "$W/native/t.db" "$TXNS" | value; }
guest_sqlite() {
    "$BIN/unikernel-hvt" --disk "data=$W/vol.img" "$W/fs-sqlite.img" -- bench "$1" "/data/t-$1-$2.db" "$TXNS" | value
}
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(statistics.median(v) if v else "nan")' "$@"; }

declare -A N G
for r in $(seq "$RUNS"); do
    N[seqwrite]+=" $(native_bench seqwrite "$SIZE")"; G[seqwrite]+=" $(guest_bench seqwrite "$SIZE")"
    N[seqread]+=" $(native_bench seqread)";           G[seqread]+=" $(guest_bench seqread)"
    N[randread]+=" $(native_bench randread "$OPS")";  G[randread]+=" $(guest_bench randread "$OPS")"
    N[randwrite]+=" $(native_bench randwrite "$OPS")"; G[randwrite]+=" $(guest_bench randwrite "$OPS")"
    N[sqlite-delete]+=" $(native_sqlite delete)";     G[sqlite-delete]+=" $(guest_sqlite delete "$r")"
    N[sqlite-wal]+=" $(native_sqlite wal)";           G[sqlite-wal]+=" $(guest_sqlite wal "$r")"
done

printf '\n%-14s %14s %14s %8s  %s\n' metric native unikernel ratio "(medians of $RUNS runs)"
for m in seqwrite seqread randread randwrite sqlite-delete sqlite-wal; do
    unit="MB/s"; case $m in rand*) unit="ops/s";; sqlite*) unit="inserts/s";; esac
    n=$(median ${N[$m]}); g=$(median ${G[$m]})
    ratio=$(python3 -c "print(f'{$g/$n:.2f}' if $n else 'nan')")
    target=""; case $m in seq*) target="target >= 0.5";; esac
    printf '%-14s %10.1f %-3s %10.1f %-3s %8s  %s\n' "$m" "$n" "" "$g" "" "$ratio" "$unit $target"
done
echo "runs: native ${N[seqwrite]} / unikernel ${G[seqwrite]} (seqwrite MB/s)"
fsck.fat -n "$W/vol.img" | tail -1

echo
echo "crash test: $KILLS kills"
UNIKERNEL_CRASH_KILLS=$KILLS cargo test --release -q -p unikernel-tests --test storage \
    acknowledged_records_survive_kills -- --nocapture 2>&1 | grep -E '^crash test|panicked|FAILED' || true
