#!/usr/bin/env bash
# Network benchmarks, side by side in one run (docs/benchmarks-net.md):
#  - HTTP requests/s of the axum template (tests/apps/http-template) on hvt
#    over a tap, against the same musl binary run natively behind a veth
#    pair, each in a namespace of its own; wrk -t2 -c32 from the namespace
#    side; VM exits per request from the monitor's UNIKERNEL_NET_STATS;
#  - TCP bulk throughput (one connection, each direction) and TCP/ICMP
#    round trips, against the tokio echo app (tests/apps/net-tokio);
#  - the HTTP figure for --net user (passt) and for kvm under QEMU TCG
#    (reported, not targeted);
#  - image sizes: hello-min, the axum template with and without strip.
# Medians of RUNS runs. Needs root (namespaces), /dev/kvm, wrk, curl,
# python3, passt, qemu-system-x86_64. Talks only to loopback and to
# addresses inside the namespaces it makes (deleted at the end).
#   RUNS=3 DUR=10 BULK=1073741824 tests/bench/net/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-3}
DUR=${DUR:-10}
BULK=${BULK:-1073741824}
ROOT=$(pwd)
BIN=$ROOT/target/release
APPS=$ROOT/tests/apps
CLIENT=$ROOT/tests/bench/net/client.py

cargo build --release -q
for app in http-template net-tokio hello-min; do
    "$BIN/cargo-unikernel" build "$APPS/$app" >/dev/null
done
"$BIN/cargo-unikernel" build --platform kvm "$APPS/http-template" >/dev/null
(cd "$APPS" && cargo build --release -q --target x86_64-unknown-linux-musl -p http-template -p net-tokio)
NATIVE=$APPS/target/x86_64-unknown-linux-musl/release
IMG=$APPS/target/unikernel/hvt

U=ukbu$$ C=ukbc$$ S=ukbs$$
cleanup() {
    pkill -f "unikernel-hvt.*$U" 2>/dev/null || true
    for ns in $U $C $S; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del $ns 2>/dev/null || true; done
}
trap cleanup EXIT
# Unikernel side: tap0 10.0.3.1 in $U, the guest at 10.0.3.2.
ip netns add $U; ip -n $U link set lo up
ip -n $U tuntap add tap0 mode tap; ip -n $U addr add 10.0.3.1/24 dev tap0; ip -n $U link set tap0 up
# Native side: client namespace $C (10.0.4.1) -- veth -- server namespace $S (10.0.4.2).
ip netns add $C; ip netns add $S
ip -n $C link set lo up; ip -n $S link set lo up
ip link add ukbv0$$ netns $C type veth peer name ukbv1$$ netns $S
ip -n $C addr add 10.0.4.1/24 dev ukbv0$$; ip -n $C link set ukbv0$$ up
ip -n $S addr add 10.0.4.2/24 dev ukbv1$$; ip -n $S link set ukbv1$$ up

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.1f}")' "$@"; }
wrk_rps() { # ns url -> requests/s
    ip netns exec "$1" wrk -t2 -c32 -d"${DUR}s" "$2" | awk '/Requests\/sec/ {print $2}'
}
wait_http() { # ns url
    for _ in $(seq 1 100); do ip netns exec "$1" curl -s --max-time 2 "$2" >/dev/null && return 0; sleep 0.1; done
    echo "server at $2 did not answer" >&2; return 1
}
guest() { # image, args... (background, in $U, stats to $STATS)
    local img=$1; shift
    UNIKERNEL_NET_STATS=1 ip netns exec $U "$BIN/unikernel-hvt" --net tap:tap0 --ip 10.0.3.2/24 --gateway 10.0.3.1 "$img" -- "$@" 2>"$STATS" >/dev/null &
    GPID=$!
}
stop_guest() { kill -INT $GPID 2>/dev/null || true; sleep 0.3; kill $GPID 2>/dev/null || true; wait $GPID 2>/dev/null || true; }

echo "# network benchmarks: RUNS=$RUNS DUR=${DUR}s BULK=$BULK, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"

# --- HTTP
STATS=$(mktemp)
u_rps=(); n_rps=(); exits=()
for r in $(seq 1 "$RUNS"); do
    guest "$IMG/http-template"; wait_http $U http://10.0.3.2:8080/
    before=$(ip netns exec $U curl -s -o /dev/null -w '%{http_code}' http://10.0.3.2:8080/)
    u_rps+=("$(wrk_rps $U http://10.0.3.2:8080/)")
    # The monitor prints its counters when it exits: one run, one figure.
    kill -TERM $GPID 2>/dev/null || true; wait $GPID 2>/dev/null || true
    line=$(grep "net stats" "$STATS" || true)
    vmx=$(sed -n 's/.* \([0-9]*\) VM exits.*/\1/p' <<<"$line")
    if [ -n "$vmx" ]; then exits+=("$(python3 -c "print(f'{$vmx / ($DUR * ${u_rps[-1]}):.2f}')")"); fi
    PORT=8080 ip netns exec $S "$NATIVE/http-template" 2>/dev/null & NPID=$!
    wait_http $C http://10.0.4.2:8080/
    n_rps+=("$(wrk_rps $C http://10.0.4.2:8080/)")
    kill $NPID; wait $NPID 2>/dev/null || true
    : "$before"
done
U_RPS=$(median "${u_rps[@]}"); N_RPS=$(median "${n_rps[@]}")
echo
echo "HTTP (axum template, wrk -t2 -c32 -d${DUR}s), requests/s"
printf '  %-28s %12s   runs: %s\n' "hvt over tap" "$U_RPS" "${u_rps[*]}"
printf '  %-28s %12s   runs: %s\n' "native behind veth" "$N_RPS" "${n_rps[*]}"
printf '  %-28s %12s\n' "unikernel/native" "$(python3 -c "print(f'{$U_RPS/$N_RPS:.2f}')")"
[ ${#exits[@]} -gt 0 ] && printf '  %-28s %12s   (whole run incl. boot; runs: %s)\n' "VM exits per request (hvt)" "$(median "${exits[@]}")" "${exits[*]}"

# --- TCP bulk and round trips against the echo app
up_u=(); down_u=(); up_n=(); down_n=(); rtt_u=(); rtt_n=(); icmp_u=(); icmp_n=()
ping_med() { ip netns exec "$1" ping -c 50 -i 0.01 -q "$2" | awk -F/ '/rtt/ {print $5 * 1000}'; }
for r in $(seq 1 "$RUNS"); do
    guest "$IMG/net-tokio" serve 7; for _ in $(seq 1 50); do ip netns exec $U python3 -c "import socket; socket.create_connection(('10.0.3.2',7),1)" 2>/dev/null && break; sleep 0.1; done
    up_u+=("$(ip netns exec $U python3 "$CLIENT" bulk-up 10.0.3.2 7 "$BULK")")
    down_u+=("$(ip netns exec $U python3 "$CLIENT" bulk-down 10.0.3.2 7 "$BULK")")
    rtt_u+=("$(ip netns exec $U python3 "$CLIENT" rtt 10.0.3.2 7 2000)")
    icmp_u+=("$(ping_med $U 10.0.3.2)")
    stop_guest
    ip netns exec $S "$NATIVE/net-tokio" serve 7 >/dev/null & NPID=$!
    sleep 0.3
    up_n+=("$(ip netns exec $C python3 "$CLIENT" bulk-up 10.0.4.2 7 "$BULK")")
    down_n+=("$(ip netns exec $C python3 "$CLIENT" bulk-down 10.0.4.2 7 "$BULK")")
    rtt_n+=("$(ip netns exec $C python3 "$CLIENT" rtt 10.0.4.2 7 2000)")
    icmp_n+=("$(ping_med $C 10.0.4.2)")
    kill $NPID; wait $NPID 2>/dev/null || true
done
row() { # label, unikernel values, native values (name of arrays)
    local -n a=$2 b=$3
    local mu mn; mu=$(median "${a[@]}"); mn=$(median "${b[@]}")
    printf '  %-28s %10s %10s %8s\n' "$1" "$mu" "$mn" "$(python3 -c "print(f'{$mu/$mn:.2f}')")"
}
echo
echo "TCP and ICMP (net-tokio echo app), medians      unikernel     native    ratio"
row "bulk to guest, MB/s" up_u up_n
row "bulk from guest, MB/s" down_u down_n
row "TCP round trip, us" rtt_u rtt_n
row "ICMP round trip, us" icmp_u icmp_n

# --- reported only: --net user and kvm/TCG
P=$((20000 + $$ % 20000))
"$BIN/unikernel-hvt" --net user -p $P:8080 "$IMG/http-template" >/dev/null 2>&1 & GP=$!
for _ in $(seq 1 100); do curl -s --max-time 2 http://127.0.0.1:$P/ >/dev/null && break; sleep 0.1; done
USER_RPS=$(wrk -t2 -c32 -d"${DUR}s" http://127.0.0.1:$P/ | awk '/Requests\/sec/ {print $2}')
kill $GP; wait $GP 2>/dev/null || true
P2=$((P + 1))
"$BIN/cargo-unikernel" run "$APPS/target/unikernel/kvm/http-template" -p $P2:8080 --timeout $((DUR + 120)) >/dev/null 2>&1 & GK=$!
for _ in $(seq 1 300); do curl -s --max-time 2 http://127.0.0.1:$P2/ >/dev/null && break; sleep 0.2; done
KVM_RPS=$(wrk -t2 -c32 -d"${DUR}s" http://127.0.0.1:$P2/ | awk '/Requests\/sec/ {print $2}')
kill $GK 2>/dev/null; pkill -f "qemu-system.*http-template" 2>/dev/null || true; wait $GK 2>/dev/null || true
echo
echo "HTTP, reported (one run each), requests/s"
printf '  %-28s %12s\n' "hvt --net user (passt)" "$USER_RPS"
printf '  %-28s %12s\n' "kvm microvm, QEMU TCG, user" "$KVM_RPS"

# --- sizes: an image holds only the loaded segments (symbols and DWARF go
# to <image>.app.debug / .kernel.debug), so it is as small as a stripped app.
sz() { stat -c %s "$1"; }
APPBIN=$APPS/target/x86_64-unknown-linux-musl/release/http-template
T=$(mktemp); strip -o "$T" "$APPBIN"
echo
echo "sizes, bytes"
printf '  %-34s %12s\n' "hello-min image (hvt)" "$(sz "$IMG/hello-min")"
printf '  %-34s %12s\n' "axum template image (hvt)" "$(sz "$IMG/http-template")"
printf '  %-34s %12s\n' "axum template app ELF" "$(sz "$APPBIN")"
printf '  %-34s %12s\n' "axum template app ELF, stripped" "$(sz "$T")"
rm -f "$T" "$STATS"
