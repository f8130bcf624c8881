#!/usr/bin/env python3
"""Benchmark clients for tests/bench/net: run inside a namespace.
  client.py bulk-up HOST PORT BYTES    -> MB/s sending BYTES to the sink
  client.py bulk-down HOST PORT BYTES  -> MB/s receiving BYTES from the source
  client.py rtt HOST PORT N            -> median TCP round trip (us) of N 1-byte echoes
"""
import socket
import statistics
import sys
import time

mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection((host, port), timeout=60)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if mode == "bulk-up":
    chunk = b"\x5a" * (256 * 1024)
    t = time.perf_counter()
    s.sendall(b"sink\n")
    left = n
    while left > 0:
        k = min(left, len(chunk))
        s.sendall(chunk[:k])
        left -= k
    s.shutdown(socket.SHUT_WR)
    got = b""
    while not got.endswith(b"\n"):
        d = s.recv(64)
        if not d:
            break
        got += d
    dt = time.perf_counter() - t
    assert int(got) == n, f"sink counted {got!r}, sent {n}"
    print(f"{n / dt / 1e6:.1f}")
elif mode == "bulk-down":
    t = time.perf_counter()
    s.sendall(f"source {n}\n".encode())
    total = 0
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        total += len(d)
    dt = time.perf_counter() - t
    assert total == n, f"received {total}, wanted {n}"
    print(f"{n / dt / 1e6:.1f}")
elif mode == "rtt":
    s.sendall(b"x")
    s.recv(1)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s.sendall(b"x")
        s.recv(1)
        times.append((time.perf_counter() - t) * 1e6)
    print(f"{statistics.median(times):.1f}")
else:
    sys.exit(f"unknown mode {mode}")
