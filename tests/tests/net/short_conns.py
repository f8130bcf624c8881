#!/usr/bin/env python3
"""Make COUNT HTTP/1.1 connections to HOST:PORT one after another, each
asking `Connection: close`, so the server closes every one first (its side
goes through TIME-WAIT). Every answer must be a 200 with BODY. Prints how
many were answered; exits 1 at the first failure, naming it. Usage:
short_conns.py HOST PORT COUNT BODY"""
import socket
import sys

host, port, count, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
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
        s.close()
    except OSError as e:
        print(f"connection {i} of {count} failed: {e}")
        sys.exit(1)
    if not reply.startswith(b"HTTP/1.1 200") or not reply.endswith(body):
        print(f"connection {i} of {count}: unexpected reply {reply[:200]!r}")
        sys.exit(1)
print(f"{count} of {count} answered")
