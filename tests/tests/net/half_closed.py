#!/usr/bin/env python3
"""Leave connections half closed on the server: ROUNDS rounds of COUNT
HTTP/1.1 requests to HOST:PORT with `Connection: close`, each read to the
end (the server has closed its side) and then kept open, never closed,
so the server's side waits in FIN-WAIT-2 for a FIN that does not come;
PAUSE seconds between rounds. Every answer must be a 200 with BODY.
Prints how many were answered; exits 1 at the first failure, naming it.
Usage: half_closed.py HOST PORT ROUNDS COUNT PAUSE BODY"""
import resource
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
rounds, count, pause = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
body = sys.argv[6].encode()
want = rounds * count + 64
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, min(hard, want)), max(hard, want)))
held = []
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
        held.append(s)
print(f"{len(held)} of {rounds * count} answered")
