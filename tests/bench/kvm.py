#!/usr/bin/env python3
"""The kvm platform's launch benchmark: launch-to-exit of hello-min on QEMU
microvm (TCG, and KVM when asked) against QEMU's own floor (an empty PVH
kernel that writes isa-debug-exit at once, kvm-floor-pvh/) and against hvt.

Called by tests/bench/kvm.sh, which builds everything first. Timing is
bench.py's (one posix_spawn, perf_counter_ns around spawn + wait4). QEMU
exits with status (N << 1) | 1 after the guest writes N to isa-debug-exit,
so a clean run of QEMU itself is status 1; `cargo unikernel run` turns it
back into 0. Exit status 1 if a run misbehaved (no figures are reported for
a broken program)."""
import argparse
import os
import re
import sys
import shutil
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Broken, spawn_timed, stats  # noqa: E402

EXPECTED = b"hello from hello-min\n"


def qemu_argv(qemu, accel, kernel, append=""):
    cpu = "EPYC" if accel == "kvm" else "qemu64"
    return [qemu, "-M", "microvm", "-accel", accel, "-cpu", cpu, "-m", "64M", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-kernel", kernel, "-append", append,
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot"]


def measure(programs, runs, tmp):
    """programs: (name, argv, expected exit, expected stdout or None); interleaved."""
    out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
    times = {p[0]: [] for p in programs}
    for round_ in range(runs + 1):  # round 0: untimed warm-up
        for name, argv, want_code, want_out in programs:
            ns, _, code, so, se = spawn_timed(argv, out, err)
            if code != want_code or (want_out is not None and so != want_out):
                raise Broken(f"{name}: exit {code} (want {want_code}), stdout {so!r} "
                             f"(want {want_out!r}), stderr:\n{se.decode(errors='replace')}")
            if round_:
                times[name].append(ns)
    return {name: stats(t) for name, t in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--kvm-runs", type=int, default=5)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--builder", required=True)
    ap.add_argument("--monitor", required=True)
    ap.add_argument("--kvm-image", required=True)
    ap.add_argument("--hvt-image", required=True)
    ap.add_argument("--floor", required=True)
    ap.add_argument("--accel-kvm", action="store_true", help="also measure -accel kvm")
    a = ap.parse_args()
    a.qemu = shutil.which(a.qemu) or a.qemu
    line = EXPECTED + b"[unikernel] exit 0\n"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            print(f"launch to exit, {a.runs} interleaved runs each (microseconds)")
            res = measure([
                ("qemu-floor tcg", qemu_argv(a.qemu, "tcg", a.floor), 1, b""),
                ("kvm hello-min tcg (qemu)", qemu_argv(a.qemu, "tcg", a.kvm_image), 1, line),
                ("kvm hello-min tcg (cargo unikernel run)",
                 [a.builder, "run", "--mem", "64M", a.kvm_image], 0, EXPECTED),
                ("hvt hello-min (unikernel-hvt)", [a.monitor, a.hvt_image], 0, EXPECTED),
            ], a.runs, tmp)
            if a.accel_kvm:
                res.update(measure([
                    ("qemu-floor kvm", qemu_argv(a.qemu, "kvm", a.floor), 1, b""),
                    ("kvm hello-min kvm (qemu)", qemu_argv(a.qemu, "kvm", a.kvm_image), 1, line),
                ], a.kvm_runs, tmp))
        except Broken as e:
            print(f"BROKEN: {e}", file=sys.stderr)
            return 1
        for name, s in res.items():
            print(f"  {name:<42} median {s['median']:>10.0f}  min {s['min']:>10.0f}  "
                  f"p90 {s['p90']:>10.0f}")
        m = {k: v["median"] for k, v in res.items()}
        print("ratios of medians")
        print(f"  kvm hello-min tcg / qemu floor tcg      {m['kvm hello-min tcg (qemu)'] / m['qemu-floor tcg']:.2f}")
        print(f"  kvm hello-min tcg / hvt hello-min       {m['kvm hello-min tcg (qemu)'] / m['hvt hello-min (unikernel-hvt)']:.2f}")
        print(f"  runner overhead (cargo unikernel run)   "
              f"{m['kvm hello-min tcg (cargo unikernel run)'] - m['kvm hello-min tcg (qemu)']:.0f} us")
        if a.accel_kvm:
            print(f"  kvm hello-min kvm / qemu floor kvm      {m['kvm hello-min kvm (qemu)'] / m['qemu-floor kvm']:.2f}")
        # Guest-side boot time: the TSC stamps the guest prints with UNIKERNEL_VERBOSE=1.
        _, _, code, so, se = spawn_timed(
            qemu_argv(a.qemu, "tcg", a.kvm_image, "UNIKERNEL_VERBOSE=1"),
            os.path.join(tmp, "out"), os.path.join(tmp, "err"))
        print("guest-side stamps (tcg, UNIKERNEL_VERBOSE=1):")
        for ln in so.decode(errors="replace").splitlines():
            if re.search(r"TSC|tsc|us\b", ln):
                print(f"  {ln}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
