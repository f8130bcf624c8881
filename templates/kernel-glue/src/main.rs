//! One kernel: the runtime, the platform's guest side and the chosen
//! components. Everything lives in those crates; this file only makes the
//! linker pull them in.
#![no_std]
#![no_main]

use platform as _;
use unikernel_runtime as _;

/// Start the chosen components (the runtime calls this at boot, after the
/// platform registered its devices and before the app starts).
#[no_mangle]
pub fn unikernel_components_init() {
    #[cfg(feature = "net")]
    unikernel_net::init();
}
