# Host side of the tap echo test, run inside the test's network namespace:
# sends frames to the guest on a tap device through an AF_PACKET socket and
# counts the echoes (the guest swaps the MACs). Prints key=value lines.
import socket, struct, sys, time

ifname, guest_mac, burst = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3])
ETH = 0x88B5
me = bytes.fromhex("020000000002")

for _ in range(200):
    if open(f"/sys/class/net/{ifname}/carrier").read().strip() == "1":
        break
    time.sleep(0.05)
else:
    print("error=no carrier on the tap device (the monitor did not attach)")
    sys.exit(1)

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((ifname, 0))


def frame(tag, seq, size=60):
    body = struct.pack(">BI", tag, seq)
    return (guest_mac + me + struct.pack(">H", ETH) + body).ljust(size, b"\0")


def echoes(until, want, stop_early=True):
    got = set()
    s.settimeout(0.2)
    while time.time() < until and len(got) < want:
        try:
            data, addr = s.recvfrom(65536)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING or data[6:12] != guest_mac or data[0:6] != me:
            continue
        got.add(struct.unpack(">I", data[15:19])[0] if len(data) >= 19 else -1)
    return got

# 1. One frame, and its echo. The guest may still be setting up: resend.
ok = False
for i in range(50):
    s.send(frame(1, 1000 + i))
    if echoes(time.time() + 0.2, 1):
        ok = True
        break
print(f"single_echo={int(ok)}")

# 2. Malformed frames from the host: oversized (bigger than a guest slot)
#    and runts. The monitor drops them; the guest must not see them.
sent_bad = 0
for size in [9000, 4000, 2100]:
    try:
        s.send(frame(2, size, size))
        sent_bad += 1
    except OSError as e:
        print(f"oversized_{size}_error={e.errno}")
for size in [1, 5, 13]:
    try:
        s.send(guest_mac[:size])
        sent_bad += 1
    except OSError as e:
        print(f"runt_{size}_error={e.errno}")
print(f"malformed_sent={sent_bad}")

# 3. A burst: keep up to WINDOW frames in flight (the tap's queue holds
#    500), count the echoes, and time it.
WINDOW = 200
got = set()
t0 = time.time()
sent = 0
deadline = t0 + 60
s.settimeout(0.05)
while len(got) < burst and time.time() < deadline:
    while sent < burst and sent - len(got) < WINDOW:
        try:
            s.send(frame(3, sent))
            sent += 1
        except BlockingIOError:
            break
    try:
        data, addr = s.recvfrom(65536)
    except socket.timeout:
        # Lost frames: let the window move on.
        if sent - len(got) >= WINDOW:
            got.update(range(-sent, -sent + 1))
        continue
    if addr[2] == socket.PACKET_OUTGOING or data[6:12] != guest_mac or data[0:6] != me or data[14] != 3:
        continue
    got.add(struct.unpack(">I", data[15:19])[0])
t1 = time.time()
echoed = len([g for g in got if g >= 0])
print(f"burst_sent={sent}")
print(f"burst_echoed={echoed}")
print(f"burst_seconds={t1 - t0:.3f}")
print(f"frames_per_second={int(echoed / max(t1 - t0, 1e-6))}")

# 4. After all that the guest still echoes; then the stop frame.
after = echoes(0, 0)
s.send(frame(1, 99))
print(f"echo_after_flood={int(bool(echoes(time.time() + 5, 1)))}")
stop = (guest_mac + me + struct.pack(">H", ETH) + b"\xff").ljust(60, b"\0")
s.send(stop)
