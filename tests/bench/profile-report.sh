#!/usr/bin/env bash
# Symbolizes a guest profile written by the hvt monitor
# (UNIKERNEL_HVT_PROFILE=FILE unikernel-hvt IMAGE ...): one line per
# function, samples and share, most frequent first, from the image's
# .kernel.debug and .app.debug (next to the image).
#   tests/bench/profile-report.sh FILE IMAGE [LINES]
set -euo pipefail
prof=$1 img=$2 lines=${3:-40}
for f in "$img.kernel.debug" "$img.app.debug"; do
    [ -e "$f" ] || { echo "missing $f (build the image with cargo unikernel build)" >&2; exit 1; }
done
command -v addr2line >/dev/null || { echo "addr2line (binutils) is needed" >&2; exit 1; }
# The app is a position-independent executable: its debug file's addresses
# start at 0, the image loads it at the manifest's app base.
cu="$(dirname "$0")/../../target/release/cargo-unikernel"
base=$("$cu" inspect "$img" 2>/dev/null | awk '/^ *app base/ {print $3}')
[ -n "$base" ] || { echo "cannot read the app base of $img (build cargo-unikernel first)" >&2; exit 1; }
head -1 "$prof"
grep -v '^#' "$prof" | python3 -c '
import subprocess, sys, collections
kern, app, lines, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4], 16)
rows = [l.split() for l in sys.stdin if l.strip()]
addrs = [a for _, a in rows]
def names(elf, shift=0):
    if not addrs:
        return []
    out = subprocess.run(["addr2line", "-f", "-C", "-e", elf] + [hex(max(int(x, 16) - shift, 0)) for x in addrs],
                         capture_output=True, text=True).stdout.splitlines()
    return out[0::2]
k, a = names(kern), names(app, base)
per = collections.Counter()
for i, (n, addr) in enumerate(rows):
    name = k[i] if k[i] != "??" else (a[i] if a[i] != "??" else addr)
    side = "kernel" if k[i] != "??" else ("app" if a[i] != "??" else "?")
    per[(side, name)] += int(n)
total = sum(per.values()) or 1
for (side, name), n in per.most_common(lines):
    print(f"{n:7d} {100*n/total:5.1f}%  {side:6s} {name[:110]}")
' "$img.kernel.debug" "$img.app.debug" "$lines" "$base"
