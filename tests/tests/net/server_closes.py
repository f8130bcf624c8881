#!/usr/bin/env python3
"""Connections that the server closes first: ROUNDS rounds of COUNT
HTTP/1.1 requests to HOST:PORT with `Connection: close`, one after
another, each read to the end (the server has closed its side), PAUSE
seconds between rounds. MODE `close` closes each client socket then (the
server's side goes through TIME-WAIT); MODE `hold` keeps every one open,
so the server's side waits in FIN-WAIT-2 for a FIN that does not come.
Every answer must be a 200 ending in BODY. Prints how many were answered;
exits 1 at the first failure, naming it.
Usage: server_closes.py MODE HOST PORT ROUNDS COUNT PAUSE BODY"""
import resource
import socket
import sys
import time

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
rounds, count, pause = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
body = sys.argv[7].encode()
if mode not in ("close", "hold"):
    sys.exit(f"MODE must be close or hold, not {mode!r}")
if mode == "hold":
    want = rounds * count + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
held = []
answered = 0
for r in range(rounds):
    if r:
        time.sleep(pause)
    for i in range(count):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            reply = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except OSError as e:
            print(f"round {r}, connection {i} of {count} failed: {e}")
            sys.exit(1)
        if not reply.startswith(b"HTTP/1.1 200") or not reply.endswith(body):
            print(f"round {r}, connection {i}: unexpected reply {reply[:200]!r}")
            sys.exit(1)
        if mode == "hold":
            held.append(s)
        else:
            s.close()
        answered += 1
print(f"{answered} of {rounds * count} answered")
