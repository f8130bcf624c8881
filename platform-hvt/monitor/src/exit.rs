//! The monitor's process exit codes.
//!
//! 0-255 belong to the app: when the guest halts with code `c`, the monitor
//! exits with `c & 0xff`. The monitor's own failures use the values below,
//! chosen (like `env`, `timeout` and container runtimes do) from the top of
//! the range so that they rarely collide with an app's own codes.

/// The guest never ran: bad command-line options, an image that is not a
/// valid hvt unikernel image, too little memory, `/dev/kvm` missing or not
/// accessible, or a KVM call failing during setup.
pub const EXIT_SETUP_FAILED: i32 = 125;

/// The guest made an invalid hypercall (unknown MMIO address, an MMIO read or
/// a write of the wrong size, an argument struct or buffer outside guest RAM,
/// an invalid stream number), or broke the network or block device's ring
/// protocol. The monitor stopped the guest.
pub const EXIT_INVALID_HYPERCALL: i32 = 254;

/// The guest crashed or stopped in a way that is not a halt hypercall (triple
/// fault, `hlt` with interrupts off, KVM internal error, failed VM entry,
/// port I/O, or any other unexpected exit). The monitor printed the
/// registers on stderr.
pub const EXIT_GUEST_CRASHED: i32 = 255;

/// gdb killed the guest (`--gdb`: gdb's `kill`, or the connection lost
/// while the guest was stopped): 128 + SIGKILL, as a shell reports a
/// process killed that way.
pub const EXIT_KILLED_BY_GDB: i32 = 137;
