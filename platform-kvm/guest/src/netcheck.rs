//! `UNIKERNEL_NET_SELFTEST=N` (feature `net`): a boot-time check of the
//! virtio-net driver below any network stack, documented in docs/kvm.md.
//! Before the app starts, each registered device sends a hello frame
//! (broadcast, EtherType 0x88b5 "local experimental", payload
//! `unikernel-net-selftest hello`) once a second until a frame arrives,
//! then sends every frame of that EtherType it receives back with the MAC
//! addresses swapped (other frames, say a host's IPv6 neighbour discovery
//! on a tap device, are counted and dropped), until N frames have come
//! back or nothing arrived for
//! [`IDLE_LIMIT_NS`]. Between frames it idles in `hlt` (the platform's
//! `block_until`), so the count of idle wake-ups by the device's interrupt
//! vector shows that interrupts are delivered. One summary line per device
//! goes to the stderr console; the app then starts as usual.

use crate::virtio_net::NET_VECTOR;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use unikernel_runtime::arch::x86_64::trap::take_pending_irqs;
use unikernel_runtime::device::NetDevice;
use unikernel_runtime::Platform;

/// EtherType of the self-test's frames (IEEE 802 local experimental).
pub const ETHERTYPE: u16 = 0x88b5;
/// Give up after this long without a frame.
const IDLE_LIMIT_NS: u64 = 20_000_000_000;
const HELLO_EVERY_NS: u64 = 1_000_000_000;
const HELLO: &[u8] = b"unikernel-net-selftest hello";

/// How one device's self-test went.
#[derive(Default)]
struct Counts {
    echoed: u32,
    ignored: u32,
    irq_wakeups: u32,
    timer_wakeups: u32,
}

fn hello(mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    f[14..14 + HELLO.len()].copy_from_slice(HELLO);
    f
}

/// Idle until an interrupt or `deadline`; acknowledge what arrived (as the
/// scheduler's idle loop does) and count why the `hlt` ended.
fn idle(p: &dyn Platform, deadline: u64, c: &mut Counts) {
    p.block_until(deadline);
    let irqs = take_pending_irqs();
    let mut net = false;
    for (w, bits) in irqs.iter().enumerate() {
        let mut b = *bits;
        while b != 0 {
            let v = (w as u32 * 64 + b.trailing_zeros()) as u8;
            b &= b - 1;
            net |= v == NET_VECTOR;
            p.end_of_interrupt(v);
        }
    }
    if net {
        c.irq_wakeups += 1;
    } else {
        c.timer_wakeups += 1;
    }
}

/// Send `frame`, idling briefly while the transmit ring is full.
fn send(p: &dyn Platform, dev: &dyn NetDevice, frame: &[u8], c: &mut Counts) -> bool {
    for _ in 0..1000 {
        if dev.transmit(frame) {
            return true;
        }
        idle(p, p.monotonic_ns() + 1_000_000, c);
    }
    false
}

fn check(p: &dyn Platform, dev: &dyn NetDevice, want: u32) -> String {
    let mut c = Counts::default();
    let mac = dev.mac();
    let mut buf = vec![0u8; dev.mtu() + 14];
    let start = p.monotonic_ns();
    let mut last_frame = start;
    let mut next_hello = start;
    let mut first_ns = None;
    let mut sent_ok = true;
    while c.echoed < want {
        let now = p.monotonic_ns();
        if c.echoed == 0 && first_ns.is_none() && now >= next_hello {
            sent_ok &= send(p, dev, &hello(mac), &mut c);
            next_hello = now + HELLO_EVERY_NS;
        }
        while let Some(n) = dev.receive(&mut buf) {
            if n < 14 || buf[12..14] != ETHERTYPE.to_be_bytes() {
                c.ignored += 1;
                continue;
            }
            last_frame = p.monotonic_ns();
            first_ns.get_or_insert(last_frame);
            let mut out = buf[..n].to_vec();
            out[..6].copy_from_slice(&buf[6..12]);
            out[6..12].copy_from_slice(&mac);
            sent_ok &= send(p, dev, &out, &mut c);
            c.echoed += 1;
            if c.echoed >= want {
                break;
            }
        }
        if c.echoed >= want || now.saturating_sub(last_frame) > IDLE_LIMIT_NS {
            break;
        }
        let wake = if first_ns.is_none() {
            next_hello
        } else {
            last_frame + IDLE_LIMIT_NS
        };
        idle(p, wake, &mut c);
    }
    let ms = first_ns.map_or(0, |f| (p.monotonic_ns() - f) / 1_000_000);
    format!(
        "[unikernel] kvm: net selftest {}: echoed {} of {want} frames in {ms} ms{}; idle wake-ups: {} by vector {NET_VECTOR}, {} by the timer; {} other frames ignored\n",
        dev.name(),
        c.echoed,
        if sent_ok { "" } else { " (transmit ring stuck)" },
        c.irq_wakeups,
        c.timer_wakeups,
        c.ignored
    )
}

/// Run the self-test on every registered device, `want` frames each.
pub fn run(p: &dyn Platform, want: u32) -> String {
    let devices = unikernel_runtime::device::net_devices();
    if devices.is_empty() {
        return String::from("[unikernel] kvm: net selftest: no virtio-net device\n");
    }
    devices.iter().map(|d| check(p, &**d, want)).collect()
}
