#!/usr/bin/env python3
"""Where the launch time goes: phase breakdown of `unikernel-hvt IMAGE` and
`kvm-floor` from `perf trace` (syscall start times and durations), median of
N runs each (interleaved). Needs perf with syscall tracepoints (root).

Usage: tests/bench/where.py MONITOR IMAGE FLOOR [RUNS]   (RUNS default 20)
(tests/bench/run.sh builds the three; see docs/benchmarks.md.)

perf trace adds roughly 10-20 us per system call, so absolute figures are
inflated (hvt makes ~80 system calls, kvm-floor ~60); compare phases, not
totals, against run.sh's untraced figures.
"""
import os
import re
import subprocess
import sys
import tempfile

LINE = re.compile(r"^\s*([\d.]+) \(\s*(?:([\d.]+) ms)?\s*\): \S+ (\w+)\((.*)\)\s+= (.*)$")


def trace(argv, tmp):
    out = os.path.join(tmp, "trace.txt")
    r = subprocess.run(["perf", "trace", "-o", out, "--"] + argv,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit(f"where: {argv[0]} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
    calls = []
    with open(out) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                t, d, name, args, _ = m.groups()
                calls.append((float(t) * 1000, float(d or 0) * 1000, name, args))
    return calls  # (start us, duration us, syscall, args)


def phases(calls, is_hvt):
    def first(pred):
        return next(c for c in calls if pred(c))

    def ioctl(cmd):
        return [c for c in calls if c[2] == "ioctl" and f"cmd: {cmd}" in c[3]]

    p = {}
    # perf trace prints file names as pointers: the /dev/kvm open is the call
    # just before KVM_CREATE_VM, the image's open the openat before that.
    create_vm = ioctl("KVM_CREATE_VM")[0]
    i_create = calls.index(create_vm)
    kvm_open = calls[i_create - 1]
    runs = ioctl("KVM_RUN")
    exit_group = first(lambda c: c[2] == "exit_group")
    vm_close = first(lambda c: c[2] == "close" and "kvm-vm" in c[3])
    if is_hvt:
        img_open = [c for c in calls[:i_create - 1] if c[2] == "openat"][-1]
        p["process start (exec, ld.so, std init, args)"] = img_open[0]
        p["read image file"] = kvm_open[0] - img_open[0]
    else:
        p["process start (exec, ld.so, std init, args)"] = kvm_open[0]
    p["KVM_CREATE_VM"] = create_vm[1]
    p["KVM_SET_USER_MEMORY_REGION"] = sum(c[1] for c in ioctl("KVM_SET_USER_MEMORY_REGION"))
    p["KVM_CREATE_VCPU"] = sum(c[1] for c in ioctl("KVM_CREATE_VCPU"))
    cpuid = sum(c[1] for c in ioctl("KVM_GET_SUPPORTED_CPUID") + ioctl("KVM_SET_CPUID2"))
    if is_hvt:
        p["KVM_GET_SUPPORTED_CPUID + KVM_SET_CPUID2"] = cpuid
    setup_total = runs[0][0] - kvm_open[0]
    named = sum(v for k, v in p.items() if k.startswith("KVM_"))
    p["other setup (load image, page tables, regs)"] = setup_total - named
    p[f"KVM_RUN ({len(runs)} calls: guest execution)"] = sum(c[1] for c in runs)
    p["monitor between exits (console write)"] = (runs[-1][0] + runs[-1][1] - runs[0][0]
                                                  - sum(c[1] for c in runs))
    p["close(vm fd): VM teardown"] = vm_close[1]
    p["rest until exit_group (drops, munmap)"] = (exit_group[0] - (runs[-1][0] + runs[-1][1])
                                                  - vm_close[1])
    p["total until exit_group"] = exit_group[0]
    return p


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    monitor, image, floor = sys.argv[1:4]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    res = {"hvt": {}, "floor": {}}
    with tempfile.TemporaryDirectory(prefix="hvt-where-") as tmp:
        for _ in range(runs):
            for name, argv in (("hvt", [monitor, image]), ("floor", [floor])):
                for k, v in phases(trace(argv, tmp), name == "hvt").items():
                    res[name].setdefault(k, []).append(v)
    keys = list(res["hvt"].keys())
    fkeys = {re.sub(r"\(\d+ calls", "(", k): k for k in res["floor"]}
    print(f"phase medians over {runs} traced runs each, microseconds (perf trace inflates "
          f"each system call by ~10-20 us)")
    print(f"  {'phase':50}{'hvt':>9}{'floor':>9}{'hvt-floor':>11}")
    for k in keys:
        h = median(res["hvt"][k])
        fk = fkeys.get(re.sub(r"\(\d+ calls", "(", k))
        f = median(res["floor"][fk]) if fk else 0.0
        print(f"  {k:50}{h:9.0f}{f:9.0f}{h - f:11.0f}")


if __name__ == "__main__":
    main()
