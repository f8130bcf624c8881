#!/usr/bin/env python3
"""Send malformed Ethernet frames out of a tap device (to the guest):
random bytes, broken IPv4/IPv6/ARP headers, bad lengths. Usage:
garbage.py IFNAME COUNT. Deterministic (seeded)."""
import random
import socket
import struct
import sys

ifname, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(1234)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
dst = bytes.fromhex("02756b000001")
src = bytes.fromhex("0200c0ffee01")
sent = 0
for i in range(count):
    kind = i % 5
    if kind == 0:  # random payload, random ethertype
        et = rng.randrange(0, 0x10000)
        body = rng.randbytes(rng.randrange(0, 1500))
    elif kind == 1:  # IPv4 with a lying total length / header length
        body = bytearray(rng.randbytes(rng.randrange(20, 1500)))
        body[0] = 0x40 | rng.randrange(0, 16)
        body[2:4] = struct.pack("!H", rng.randrange(0, 0x10000))
        body[9] = rng.choice([1, 6, 17, 255])
        et = 0x0800
    elif kind == 2:  # IPv6 with a bad payload length
        body = bytearray(rng.randbytes(rng.randrange(40, 1500)))
        body[0] = 0x60
        body[4:6] = struct.pack("!H", rng.randrange(0, 0x10000))
        body[6] = rng.choice([6, 17, 58, 0, 43])
        et = 0x86DD
    elif kind == 3:  # truncated ARP
        body = rng.randbytes(rng.randrange(0, 28))
        et = 0x0806
    else:  # TCP SYN flood with random flags to the service port
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xFFFF, 0, 64, 6, 0,
                         bytes([10, 0, 3, 1]), bytes([10, 0, 3, 2]))
        tcp = struct.pack("!HHIIBBHHH", rng.randrange(1, 65536), 8080, rng.getrandbits(32),
                          0, 0x50, rng.randrange(0, 256), 1024, 0, 0)
        body = ip + tcp
        et = 0x0800
    frame = dst + src + struct.pack("!H", et) + bytes(body)
    try:
        s.send(frame[:1514])
        sent += 1
    except OSError:
        pass
print(f"sent {sent} frames")
