//! One kernel: the runtime, the platform's guest side and the chosen
//! components. Everything lives in those crates; this file only makes the
//! linker pull them in.
#![no_std]
#![no_main]

use platform as _;
use unikernel_runtime as _;
