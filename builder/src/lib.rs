//! `cargo-unikernel`: builds a Rust program (or any static x86_64 Linux
//! executable) into one bootable unikernel image, and runs or inspects it.
//!
//! The journey of `cargo unikernel build`, one module per step:
//!
//! 1. [`config`]: the app's `[package.metadata.unikernel]` table;
//! 2. [`pipeline`]: cargo metadata, then `cargo build` of the app for
//!    `x86_64-unknown-linux-musl` (through [`cargo`], under [`progress`]),
//!    with the system-call shim of [`shim`] linked in;
//! 3. [`elf_input`]: refuse an app the unikernel cannot run, with one line;
//! 4. [`select`]: the components, from the metadata and the app's symbols;
//!    [`files`]: the embedded read-only files;
//!    [`kernel`]: generate the glue crate and build the kernel;
//! 5. [`link`]: kernel + app + manifest note -> the image;
//! 6. [`image`]: read an image back (`run IMAGE`, `inspect`);
//!    [`messages`]: `--message-format json` for CI pipelines.
//!
//! `cargo unikernel run` of a kvm image: [`cmdline`] encodes args and env,
//! [`netopt`] and [`diskopt`] parse the network and disk flags, [`vmm`]
//! builds the QEMU command line (or a Firecracker config),
//! [`kvm_run`] starts QEMU and relays the console through [`console`].
//!
//! `cargo unikernel run` of a xen image: [`xl`] writes the `xl` config and
//! runs `xl create -c` in a Xen dom0.
//!
//! [`template`] is `cargo unikernel new`.
pub mod cargo;
pub mod cloud;
pub mod cmdline;
pub mod config;
pub mod console;
pub mod diskopt;
pub mod elf_input;
pub mod files;
pub mod image;
pub mod kernel;
pub mod kvm_run;
pub mod link;
pub mod messages;
pub mod netopt;
pub mod oci;
pub mod pack;
pub mod pipeline;
pub mod progress;
pub mod repro;
pub mod select;
pub mod shim;
pub mod symbolize;
pub mod template;
pub mod vmm;
pub mod xl;

#[cfg(test)]
mod testutil;
