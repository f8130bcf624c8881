#!/usr/bin/env python3
"""The hvt benchmarks: launch-to-exit time, image size, smallest --mem.

Called by tests/bench/run.sh (which builds everything first); see
docs/benchmarks.md. Exit status 0 whenever the measurements could be made,
whatever the figures; 1 if a run was broken (wrong output or exit status), so
that no benchmark of a broken program is ever reported.

Timing: each run is one os.posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK) +
execve) with stdout/stderr redirected to files, then waitpid; the clock is
time.perf_counter_ns (CLOCK_MONOTONIC) read just before the spawn and just
after waitpid returns. The harness's own cost is the same for the three
programs and is reported (the `spawn-floor` line: a static binary that exits
at once would cost about the native hello-min's time).
"""
import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

EXPECTED = b"hello from hello-min\n"
MIB = 1 << 20
PAGE = 4096


class Broken(Exception):
    """A benchmarked program misbehaved: the figures would be meaningless."""


def spawn_timed(argv, out_path, err_path):
    """Runs argv once; returns (wall ns, CPU ns, exit code, stdout, stderr).

    CPU time is the child's user + system time from wait4's rusage (guest time
    counts as user time); unlike wall time it hardly moves when other
    processes compete for the CPUs."""
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    actions = [
        (os.POSIX_SPAWN_DUP2, out, 1),
        (os.POSIX_SPAWN_DUP2, err, 2),
        (os.POSIX_SPAWN_CLOSE, out),
        (os.POSIX_SPAWN_CLOSE, err),
    ]
    try:
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        t1 = time.perf_counter_ns()
    finally:
        os.close(out)
        os.close(err)
    with open(out_path, "rb") as f:
        stdout = f.read()
    with open(err_path, "rb") as f:
        stderr = f.read()
    cpu = round((usage.ru_utime + usage.ru_stime) * 1e9)
    return t1 - t0, cpu, os.waitstatus_to_exitcode(status), stdout, stderr


def check(name, code, stdout, stderr, expect_stdout):
    if code != 0 or (expect_stdout is not None and stdout != expect_stdout):
        raise Broken(
            f"{name}: exit status {code}, stdout {stdout!r} (expected "
            f"{expect_stdout!r} and 0), stderr:\n{stderr.decode(errors='replace')}"
        )


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    k = max(0, min(len(sorted_values) - 1, -(-p * len(sorted_values) // 100) - 1))
    return sorted_values[int(k)]


def median(sorted_values):
    n = len(sorted_values)
    mid = n // 2
    return sorted_values[mid] if n % 2 else (sorted_values[mid - 1] + sorted_values[mid]) / 2


def stats(ns_values):
    v = sorted(x / 1000 for x in ns_values)  # microseconds
    return {"median": median(v), "min": v[0], "p90": percentile(v, 90), "max": v[-1],
            "mean": sum(v) / len(v)}


def bench_launch(programs, runs, tmp):
    """programs: list of (name, argv, expected stdout or None). Interleaved runs."""
    times = {name: [] for name, _, _ in programs}
    cpu = {name: [] for name, _, _ in programs}
    out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
    # One untimed warm-up round: page cache, dynamic loader caches, KVM module state.
    for name, argv, expect in programs:
        _, _, code, so, se = spawn_timed(argv, out, err)
        check(name, code, so, se, expect)
    for _ in range(runs):
        for name, argv, expect in programs:
            ns, cpu_ns, code, so, se = spawn_timed(argv, out, err)
            check(name, code, so, se, expect)
            times[name].append(ns)
            cpu[name].append(cpu_ns)
    return ({name: stats(t) for name, t in times.items()},
            {name: stats(t) for name, t in cpu.items()})


def elf_loads(path):
    """(file size, [(vaddr, filesz, memsz, flags)] of PT_LOAD) from the ELF64 program headers."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise Broken(f"{path}: not a little-endian ELF64 file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads = []
    for i in range(phnum):
        p_type, p_flags, _off, vaddr, _paddr, filesz, memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((vaddr, filesz, memsz, p_flags))
    return len(data), loads


def image_sizes(builder, image):
    text = subprocess.run([builder, "inspect", image], check=True, capture_output=True,
                          text=True).stdout
    sizes = {}
    for key, pattern in (("kernel", r"^\s*kernel\s+(\d+) bytes"),
                         ("app", r"^\s*app\s+(\d+) bytes"),
                         ("file", r"^\s*image file\s+(\d+) bytes")):
        m = re.search(pattern, text, re.M)
        if not m:
            raise Broken(f"`cargo-unikernel inspect` printed no {key} size:\n{text}")
        sizes[key] = int(m.group(1))
    m = re.search(r"^\s*app base\s+(0x[0-9a-f]+)", text, re.M)
    app_base = int(m.group(1), 16) if m else None
    # Cross-check against the ELF program headers read here.
    file_size, loads = elf_loads(image)
    if file_size != sizes["file"] or file_size != os.path.getsize(image):
        raise Broken(f"image file size: inspect says {sizes['file']}, the file has {file_size}")
    total = sum(filesz for _, filesz, _, _ in loads)
    if total != sizes["kernel"] + sizes["app"]:
        raise Broken(f"PT_LOAD file sizes sum to {total}, inspect says kernel + app = "
                     f"{sizes['kernel'] + sizes['app']}")
    if app_base is not None:
        sizes["kernel_mem"] = sum(m for v, _, m, _ in loads if v < app_base)
        sizes["app_mem"] = sum(m for v, _, m, _ in loads if v >= app_base)
        sizes["span_end"] = max(v + m for v, _, m, _ in loads)
    return sizes


def runs_with_mem(monitor, image, mem):
    """(ok, description) for one run of the image with `--mem mem` (bytes)."""
    try:
        r = subprocess.run([monitor, "--mem", str(mem), image], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "timed out after 20 s"
    ok = r.returncode == 0 and r.stdout == EXPECTED
    first_err = r.stderr.decode(errors="replace").strip().splitlines()[:1]
    return ok, f"exit {r.returncode}, stdout {r.stdout[:60]!r}" + (
        f", stderr: {first_err[0]}" if first_err else "")


def smallest_mem(monitor, image, lo=1 * MIB, hi=4 * MIB):
    """Bisects over 4 KiB multiples for the smallest working --mem in (lo, hi]."""
    ok_hi, why = runs_with_mem(monitor, image, hi)
    if not ok_hi:
        raise Broken(f"hello-min does not run even with --mem {hi >> 20}M: {why}")
    ok_lo, why_lo = runs_with_mem(monitor, image, lo)
    if ok_lo:
        return lo, None, "(the lower bound itself works)"
    lo_fail, hi_ok = lo, hi
    fail_why = why_lo
    while hi_ok - lo_fail > PAGE:
        mid = (lo_fail + hi_ok) // 2 // PAGE * PAGE
        ok, why = runs_with_mem(monitor, image, mid)
        if ok:
            hi_ok = mid
        else:
            lo_fail, fail_why = mid, why
    # The bisection assumes monotonicity; confirm both neighbours once more.
    ok, why = runs_with_mem(monitor, image, hi_ok)
    if not ok:
        raise Broken(f"--mem {hi_ok} worked once and then failed: {why}")
    return hi_ok, lo_fail, fail_why


def kib(n):
    return f"{n} bytes ({n / 1024:.1f} KiB)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--monitor", required=True)
    ap.add_argument("--builder", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--floor", required=True)
    ap.add_argument("--native", required=True)
    ap.add_argument("--skip-mem", action="store_true", help="skip the --mem bisection")
    a = ap.parse_args()
    if a.runs < 20:
        sys.exit("bench: at least 20 runs are needed for a median and a p90")

    print(f"== machine: {os.cpu_count()} CPUs, kernel {os.uname().release}, "
          f"load average {os.getloadavg()[0]:.2f} (1 min) at start")
    kvm = ""
    try:
        kvm = subprocess.run(["sh", "-c", "dmesg 2>/dev/null | grep -m1 -o kvm-pvm"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    print(f"== /dev/kvm: {kvm or 'hardware KVM or unknown (no kvm-pvm in dmesg)'}")

    with tempfile.TemporaryDirectory(prefix="hvt-bench-") as tmp:
        programs = [
            ("hvt", [a.monitor, a.image], EXPECTED),
            ("floor", [a.floor], b""),
            ("native", [a.native], EXPECTED),
        ]
        print(f"\n== 1. launch-to-exit wall time, {a.runs} interleaved runs each "
              f"(hvt, floor, native, hvt, ...), microseconds")
        s, c = bench_launch(programs, a.runs, tmp)
    labels = {
        "hvt": "unikernel-hvt hello-min",
        "floor": "kvm-floor",
        "native": "native musl hello-min",
    }
    print(f"  {'':26}{'median':>9}{'min':>9}{'p90':>9}{'max':>9}{'mean':>9}")
    for name in ("hvt", "floor", "native"):
        v = s[name]
        print(f"  {labels[name]:26}{v['median']:9.0f}{v['min']:9.0f}{v['p90']:9.0f}"
              f"{v['max']:9.0f}{v['mean']:9.0f}")
    print(f"  CPU time (user+sys of the child, rusage; 1 ms kernel tick granularity "
          f"possible), median / mean:")
    for name in ("hvt", "floor", "native"):
        print(f"  {labels[name]:26}{c[name]['median']:9.0f}{c[name]['mean']:9.0f}")
    r_floor = s["hvt"]["median"] / s["floor"]["median"]
    r_native = s["hvt"]["median"] / s["native"]["median"]
    print(f"  ratio hvt/floor  (median) {r_floor:.2f}   (min) "
          f"{s['hvt']['min'] / s['floor']['min']:.2f}")
    print(f"  ratio hvt/native (median) {r_native:.2f}   (min) "
          f"{s['hvt']['min'] / s['native']['min']:.2f}")
    print(f"  hvt - floor (median) {s['hvt']['median'] - s['floor']['median']:.0f} us; "
          f"every hvt run printed {EXPECTED.decode().strip()!r} and exited 0")

    print("\n== 2. image size")
    z = image_sizes(a.builder, a.image)
    print(f"  kernel part (PT_LOAD file bytes)  {kib(z['kernel'])}")
    print(f"  app part    (PT_LOAD file bytes)  {kib(z['app'])}")
    if "kernel_mem" in z:
        print(f"  in memory: kernel {kib(z['kernel_mem'])}, app {kib(z['app_mem'])}, "
              f"image ends at {z['span_end']:#x}")
    print(f"  image file                        {kib(z['file'])}  "
          f"= {z['file'] / MIB * 100:.0f}% of the 1 MiB target")

    mem_min = None
    mem2 = None
    if not a.skip_mem:
        print("\n== 3. smallest --mem (bisection over 4 KiB multiples in (1M, 4M])")
        mem_min, mem_fail, fail_why = smallest_mem(a.monitor, a.image)
        print(f"  smallest working --mem: {mem_min} bytes ({mem_min / 1024:.0f} KiB, "
              f"{mem_min / MIB:.3f} MiB)")
        if mem_fail is not None:
            print(f"  --mem {mem_fail} ({mem_fail // 1024}K) fails: {fail_why}")
        mem2, why2 = runs_with_mem(a.monitor, a.image, 2 * MIB)
        print(f"  --mem 2M: {'works' if mem2 else 'FAILS: ' + why2}")

    def verdict(ok):
        return "PASS" if ok else "FAIL"

    print("\n== summary")
    print(f"  launch  hvt/floor = {r_floor:.2f} (target <= 2.00)       "
          f"{verdict(r_floor <= 2.0)}   [hvt {s['hvt']['median']:.0f} us, floor "
          f"{s['floor']['median']:.0f} us, native {s['native']['median']:.0f} us; "
          f"hvt/native {r_native:.2f}]")
    print(f"  size    image = {z['file'] / 1024:.1f} KiB (target <= 1024 KiB)   "
          f"{verdict(z['file'] <= MIB)}   [kernel {z['kernel'] / 1024:.1f} KiB, "
          f"app {z['app'] / 1024:.1f} KiB]")
    if mem2 is not None:
        print(f"  memory  runs with --mem 2M                   {verdict(mem2)}   "
              f"[smallest --mem {mem_min // 1024} KiB]")
    print(f"  (N = {a.runs}; load average {os.getloadavg()[0]:.2f} at the end)")


if __name__ == "__main__":
    try:
        main()
    except Broken as e:
        print(f"\nbench: BROKEN: {e}", file=sys.stderr)
        sys.exit(1)
