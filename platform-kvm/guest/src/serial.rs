//! The 8250/16550 UARTs: COM1 (0x3f8) carries the app's stdout, COM2
//! (0x2f8), when the machine has one, its stderr. Output is written
//! synchronously (each byte waits for the transmitter), so nothing is lost
//! when the guest halts right after. Port I/O needs ring 0: from ring 3
//! each byte goes through the runtime's privileged gate.

use crate::cpu::{inb, outb};
use core::sync::atomic::{AtomicBool, Ordering};
use unikernel_runtime::arch::x86_64::cpu::{cpl, privileged};

pub const COM1: u16 = 0x3f8;
pub const COM2: u16 = 0x2f8;

static HAVE_COM2: AtomicBool = AtomicBool::new(false);

/// # Safety
/// Ring 0, at boot.
unsafe fn present(base: u16) -> bool {
    // SAFETY: per the function contract; the scratch register is harmless.
    unsafe {
        outb(base + 7, 0x5a);
        inb(base + 7) == 0x5a
    }
}

/// # Safety
/// Ring 0, at boot.
unsafe fn setup(base: u16) {
    // SAFETY: per the function contract.
    unsafe {
        outb(base + 1, 0x00); // no interrupts
        outb(base + 3, 0x80); // DLAB
        outb(base, 0x01); // 115200 baud
        outb(base + 1, 0x00);
        outb(base + 3, 0x03); // 8N1
        outb(base + 2, 0xc7); // FIFOs on, cleared
        outb(base + 4, 0x03); // DTR, RTS
    }
}

/// Program COM1 and, if present, COM2.
///
/// # Safety
/// Ring 0, at boot.
pub unsafe fn init() {
    // SAFETY: per the function contract.
    unsafe {
        setup(COM1);
        if present(COM2) {
            setup(COM2);
            HAVE_COM2.store(true, Ordering::Relaxed);
        }
    }
}

/// The port for stderr: COM2 if the machine has it, else COM1.
pub fn stderr_port() -> u16 {
    if HAVE_COM2.load(Ordering::Relaxed) {
        COM2
    } else {
        COM1
    }
}

/// Write bytes to the UART at `port`.
pub fn write(port: u16, data: &[u8]) {
    if cpl() == 0 {
        for &b in data {
            // SAFETY: ring 0 (checked); our UART.
            unsafe {
                while inb(port + 5) & 0x20 == 0 {}
                outb(port, b);
            }
        }
    } else {
        for &b in data {
            privileged::serial_out(port, b);
        }
    }
}
