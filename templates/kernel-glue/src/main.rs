//! One kernel: the runtime, the platform's guest side and the chosen
//! components. Everything lives in those crates; this file makes the linker
//! pull them in and starts the components.
#![no_std]
#![no_main]

use platform as _;
use unikernel_runtime as _;

/// Start the chosen components. The runtime calls this once at boot, after
/// the platform registered its devices and before the app starts; every
/// kernel defines it (a kernel without components does nothing here).
#[no_mangle]
pub fn unikernel_components_init() {
    #[cfg(feature = "net")]
    unikernel_net::init();
    #[cfg(feature = "fs")]
    unikernel_fs::init();
}
